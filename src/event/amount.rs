//! Conversion values: decimal text rounded to cents (half away from zero), without ever going
//! through a binary float, so that `0.125` becomes `0.13` as a person expects.

/// An amount in hundredths, at most [`Amount::MAX_CENTS`] either side of zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(u64, bool);

/// Why a value is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not a decimal number (NaN, Infinity, words…).
    #[error("is not a decimal number")]
    NotANumber,
    /// Below zero.
    /// Too large to be a real conversion value.
    #[error("is larger than 10000000000000")]
    TooLarge,
}

impl Amount {
    /// The largest accepted value, in hundredths (10^13 in units).
    pub const MAX_CENTS: u64 = 1_000_000_000_000_000;

    /// Parses a JSON-style decimal (`12`, `-0.5`, `1.5e3`) and rounds it to 2 decimals, half away
    /// from zero.
    pub fn parse(text: &str) -> Result<Self, AmountError> {
        match Self::parse_plain(text) {
            Some(amount) => Ok(amount),
            None => Self::parse_general(text),
        }
    }

    /// Any decimal, with sign and exponent.
    fn parse_general(text: &str) -> Result<Self, AmountError> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(i) => {
                let exp: i64 = rest[i + 1..].parse().map_err(|_| AmountError::NotANumber)?;
                (&rest[..i], exp)
            }
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        {
            return Err(AmountError::NotANumber);
        }
        // The significant digits (leading zeros dropped) × 10^shift hundredths; walked twice
        // rather than collected, as this runs for every event.
        let significant = || {
            int.bytes()
                .chain(frac.bytes())
                .map(|b| b - b'0')
                .skip_while(|d| *d == 0)
        };
        let count = significant().count();
        if count == 0 {
            return Ok(Self(0, false));
        }
        let shift = exponent.saturating_add(2).saturating_sub(frac.len() as i64);
        let keep = if shift >= 0 {
            count
        } else {
            let drop = usize::try_from(-shift).unwrap_or(usize::MAX);
            if drop > count {
                return Ok(Self(0, false));
            }
            count - drop
        };
        let scale = if shift > 0 { shift } else { 0 };
        if keep as i64 + scale > 19 {
            return Err(AmountError::TooLarge);
        }
        let mut cents: u64 = 0;
        let mut round_up = false;
        for (i, d) in significant().enumerate() {
            if i < keep {
                cents = cents * 10 + u64::from(d);
            } else {
                round_up = d >= 5;
                break;
            }
        }
        cents = cents
            .checked_mul(10u64.pow(scale as u32))
            .ok_or(AmountError::TooLarge)?
            + u64::from(round_up);
        if cents > Self::MAX_CENTS {
            return Err(AmountError::TooLarge);
        }
        Ok(Self(cents, negative && cents > 0))
    }

    /// The fast path of [`Amount::parse`] for what nearly every value looks like: `digits` or
    /// `digits.digits`, at most 13 digits before the point. `None` for anything else (sign,
    /// exponent, too long, not a number), which the general path then decides.
    fn parse_plain(text: &str) -> Option<Self> {
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || int.len() > 13 || !digits(int) || !digits(frac) {
            return None;
        }
        if text.len() > int.len() && frac.is_empty() {
            return None; // "12." is not a JSON number; the general path decides.
        }
        let units = int.bytes().fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
        let mut places = frac.bytes().map(|b| u64::from(b - b'0'));
        let tenths = places.next().unwrap_or(0);
        let hundredths = places.next().unwrap_or(0);
        // Half away from zero: the third decimal alone decides (≥ 5 means ≥ 0.005).
        let round_up = places.next().is_some_and(|d| d >= 5);
        let cents = units * 100 + tenths * 10 + hundredths + u64::from(round_up);
        (cents <= Self::MAX_CENTS).then_some(Self(cents, false))
    }

    /// The amount in hundredths, without its sign.
    pub fn cents(self) -> u64 {
        self.0
    }

    /// Whether it is below zero (a refund).
    pub fn is_negative(self) -> bool {
        self.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cents(s: &str) -> Result<u64, AmountError> {
        Amount::parse(s).map(Amount::cents)
    }

    #[test]
    fn rounds_half_away_from_zero_on_the_decimal_text() {
        assert_eq!(cents("12"), Ok(1200));
        assert_eq!(cents("12.345"), Ok(1235));
        assert_eq!(cents("0.125"), Ok(13));
        assert_eq!(cents("0.124999"), Ok(12));
        assert_eq!(cents("1.005"), Ok(101));
        assert_eq!(cents("1.5e2"), Ok(15000));
        assert_eq!(cents("125E-3"), Ok(13));
        assert_eq!(cents("0.004"), Ok(0));
        assert_eq!(cents("0.005"), Ok(1));
        assert_eq!(cents("-0"), Ok(0));
        assert_eq!(cents(".5"), Ok(50));
    }

    #[test]
    fn negative_amounts_keep_their_sign() {
        let a = Amount::parse("-1.505").unwrap();
        assert_eq!((a.cents(), a.is_negative()), (151, true));
        assert!(!Amount::parse("-0.001").unwrap().is_negative());
        assert!(!Amount::parse("2").unwrap().is_negative());
    }

    #[test]
    fn rejects_what_is_not_an_amount() {
        assert_eq!(cents("NaN"), Err(AmountError::NotANumber));
        assert_eq!(cents("Infinity"), Err(AmountError::NotANumber));
        assert_eq!(cents(""), Err(AmountError::NotANumber));
        assert_eq!(cents("1,5"), Err(AmountError::NotANumber));
        assert_eq!(cents("1e400"), Err(AmountError::TooLarge));
        assert_eq!(cents("10000000000000.01"), Err(AmountError::TooLarge));
        assert_eq!(cents("1e-400"), Ok(0));
    }

    proptest! {
        #[test]
        fn the_fast_path_agrees_with_the_general_one(
            text in "[0-9]{0,15}(\\.[0-9]{0,6})?|[0-9.eE+-]{0,8}"
        ) {
            if let Some(fast) = Amount::parse_plain(&text) {
                prop_assert_eq!(Ok(fast), Amount::parse_general(&text), "{}", text);
            }
        }
    }
}
