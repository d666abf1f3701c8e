//! Amazon Ads regions and their hosts.

/// Amazon Ads regions; each has its own API host and Login with Amazon token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// North America.
    Na,
    /// Europe.
    Eu,
    /// Far East.
    Fe,
}

impl Region {
    /// Parses `NA`, `EU` or `FE` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "NA" => Some(Self::Na),
            "EU" => Some(Self::Eu),
            "FE" => Some(Self::Fe),
            _ => None,
        }
    }

    /// The DSP API base URL of the region.
    pub fn api_url(self) -> &'static str {
        match self {
            Self::Na => "https://advertising-api.amazon.com",
            Self::Eu => "https://advertising-api-eu.amazon.com",
            Self::Fe => "https://advertising-api-fe.amazon.com",
        }
    }

    /// The Login with Amazon token endpoint of the region.
    pub fn token_url(self) -> &'static str {
        match self {
            Self::Na => "https://api.amazon.com/auth/o2/token",
            Self::Eu => "https://api.amazon.co.uk/auth/o2/token",
            Self::Fe => "https://api.amazon.co.jp/auth/o2/token",
        }
    }
}
