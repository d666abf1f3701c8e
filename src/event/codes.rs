//! The closed vocabularies of the DSP event: country codes, currency codes, sources.

/// ISO 3166-1 alpha-2 codes, sorted for binary search.
const COUNTRIES: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// `COUNTRIES` indexed by letter pair (`AA` = 0, `AB` = 1, … `ZZ` = 675): a lookup per event
/// instead of a search.
const BY_LETTERS: [Option<&str>; 26 * 26] = {
    let mut table = [None; 26 * 26];
    let mut i = 0;
    while i < COUNTRIES.len() {
        let b = COUNTRIES[i].as_bytes();
        table[(b[0] - b'A') as usize * 26 + (b[1] - b'A') as usize] = Some(COUNTRIES[i]);
        i += 1;
    }
    table
};

/// The canonical (upper-case) ISO 3166-1 alpha-2 code for `s`, accepted in any case.
pub fn country_code(s: &str) -> Option<&'static str> {
    let &[a, b] = s.as_bytes() else {
        return None;
    };
    let (a, b) = (a.to_ascii_uppercase(), b.to_ascii_uppercase());
    if !a.is_ascii_uppercase() || !b.is_ascii_uppercase() {
        return None;
    }
    BY_LETTERS[usize::from(a - b'A') * 26 + usize::from(b - b'A')]
}

/// A currency the DSP accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CurrencyCode(&'static str);

impl CurrencyCode {
    /// Every currency code the DSP accepts.
    pub const ALL: [&'static str; 18] = [
        "AED", "AUD", "BRL", "CAD", "CNY", "DKK", "EUR", "GBP", "INR", "JPY", "MXN", "NOK", "NZD",
        "SAR", "SEK", "SGD", "TRY", "USD",
    ];

    /// Parses a currency code, in any case.
    pub fn parse(s: &str) -> Option<Self> {
        let &[a, b, c] = s.as_bytes() else {
            return None;
        };
        let upper = [a, b, c].map(|x| x.to_ascii_uppercase());
        Self::ALL
            .iter()
            .find(|code| code.as_bytes() == upper)
            .map(|code| Self(code))
    }

    /// The code.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

crate::domain::code_enum! {
    /// Where the DSP is told events come from; one per request.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum Source {
        /// Events observed by the Amazon ad tag.
        AmazonAdTag = "AMAZON_AD_TAG",
        /// Events sent from the advertiser's servers.
        #[default]
        ServerToServer = "SERVER_TO_SERVER",
    }
}

impl Source {
    /// Index into per-source arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_list_is_sorted_and_complete() {
        assert!(COUNTRIES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(country_code("us"), Some("US"));
        assert_eq!(country_code("GB"), Some("GB"));
        assert_eq!(country_code("UK"), None);
        assert_eq!(country_code("USA"), None);
        assert_eq!(country_code("é"), None);
        assert_eq!(country_code("u\u{0}"), None);
        assert_eq!(country_code("[]"), None);
        for c in COUNTRIES {
            assert_eq!(country_code(&c.to_ascii_lowercase()), Some(c));
        }
    }

    #[test]
    fn currencies() {
        assert_eq!(
            CurrencyCode::parse("usd").map(CurrencyCode::as_str),
            Some("USD")
        );
        assert_eq!(CurrencyCode::parse("XYZ"), None);
    }
}
