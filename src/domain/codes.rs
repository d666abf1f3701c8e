//! Closed vocabularies written as codes (sources, match-key types, reason codes): one macro that
//! declares such an enum with each variant's code next to it, and derives the rest from that list.

/// Declares an enum whose variants are written as codes, `Variant = "CODE"`, and derives from
/// that one list:
///
/// - `ALL` and `CODES`: the coded variants and their codes, in declaration order;
/// - `NAMES`: the codes separated by spaces, for messages;
/// - `parse`: the variant of a code, matched exactly (case and all);
/// - `as_str`, `Display` and `Serialize` (a string): the code.
///
/// Variants that carry data go in an `else { … }` block after the coded ones. They have no
/// code of their own, so the type writes its `Display` by hand, and instead of `as_str` it gets
/// `static_code`: the code of a coded variant, `None` for the others.
macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// The code.
            pub const fn as_str(&self) -> &'static str {
                match self {
                    $( Self::$variant => $code, )+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        $crate::domain::code_enum!(@lists $name { $( $variant = $code ),+ });
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal ),+ $(,)?
        }
        else {
            $( $(#[$xmeta:meta])* $xvariant:ident ( $($xfield:ty),+ $(,)? ) ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
            $( $(#[$xmeta])* $xvariant($($xfield),+), )+
        }

        impl $name {
            /// The code of a coded variant; `None` for a variant with data.
            pub const fn static_code(&self) -> Option<&'static str> {
                match self {
                    $( Self::$variant => Some($code), )+
                    $( Self::$xvariant(..) => None, )+
                }
            }
        }

        $crate::domain::code_enum!(@lists $name { $( $variant = $code ),+ });
    };
    (@lists $name:ident {
        $first:ident = $first_code:literal $(, $variant:ident = $code:literal )*
    }) => {
        impl $name {
            /// Every coded variant, in declaration order.
            pub const ALL: [Self; [$first_code $(, $code)*].len()] =
                [Self::$first $(, Self::$variant)*];

            /// The codes of [`Self::ALL`], in the same order.
            pub const CODES: [&'static str; [$first_code $(, $code)*].len()] =
                [$first_code $(, $code)*];

            /// Every code, separated by spaces: for messages.
            pub const NAMES: &'static str = concat!($first_code $(, " ", $code)*);

            /// The variant of `code`, matched exactly.
            pub fn parse(code: &str) -> Option<Self> {
                match code {
                    $first_code => Some(Self::$first),
                    $( $code => Some(Self::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

pub(crate) use code_enum;

#[cfg(test)]
mod tests {
    code_enum! {
        /// A vocabulary of two codes.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Pair {
            /// The first.
            One = "ONE",
            /// The second.
            Two = "TWO_2",
        }
    }

    code_enum! {
        /// Codes and a variant with data.
        #[derive(Clone, Debug, PartialEq, Eq)]
        enum Open {
            /// Coded.
            Known = "KNOWN",
        }
        else {
            /// Not coded.
            Other(String),
        }
    }

    #[test]
    fn the_list_gives_every_derived_item() {
        assert_eq!(Pair::ALL, [Pair::One, Pair::Two]);
        assert_eq!(Pair::CODES, ["ONE", "TWO_2"]);
        assert_eq!(Pair::NAMES, "ONE TWO_2");
        for (kind, code) in Pair::ALL.into_iter().zip(Pair::CODES) {
            assert_eq!(kind.as_str(), code);
            assert_eq!(kind.to_string(), code);
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{code}\""));
            assert_eq!(Pair::parse(code), Some(kind));
        }
        assert_eq!(Pair::parse("one"), None);
        assert_eq!(Pair::parse(""), None);
    }

    #[test]
    fn variants_with_data_have_no_code() {
        assert_eq!(Open::ALL, [Open::Known]);
        assert_eq!((Open::CODES, Open::NAMES), (["KNOWN"], "KNOWN"));
        assert_eq!(Open::Known.static_code(), Some("KNOWN"));
        assert_eq!(Open::Other("KNOWN".into()).static_code(), None);
        assert_eq!(Open::parse("KNOWN"), Some(Open::Known));
        assert_eq!(Open::parse("Other"), None);
    }
}
