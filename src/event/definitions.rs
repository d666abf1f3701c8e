//! The advertiser's conversion definitions, as the DSP lists them, and how an event finds its
//! own: by its `conversionDefinitionId`, by the entry of `DSP_CONVERSION_DEFINITIONS` for its
//! conversion type (an id or a definition's name), by a definition named like its conversion
//! type, or by the default. Each definition has exactly one source, which becomes the source of
//! the request that carries the event.

use std::collections::HashMap;
use std::sync::Arc;

use super::Source;

/// Where a definition's events come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefinitionSource {
    /// `AMAZON_AD_TAG` or `SERVER_TO_SERVER`: events can be imported under it.
    Import(Source),
    /// `MMP` or another source this API does not import events for.
    Other(String),
}

impl DefinitionSource {
    /// The DSP's name of a source.
    pub fn parse(s: &str) -> Self {
        match Source::parse(s) {
            Some(source) => Self::Import(source),
            None => Self::Other(s.to_owned()),
        }
    }
}

/// One conversion definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    /// `conversionDefinitionId`.
    pub id: Arc<str>,
    /// The name shown in the DSP console.
    pub name: Arc<str>,
    /// `conversionType`, e.g. `OFF_AMAZON_PURCHASES`.
    pub conversion_type: Option<String>,
    /// Its one source (`None` when the DSP did not say).
    pub source: Option<DefinitionSource>,
}

impl Definition {
    /// Whether its events may carry a negative value (a refund): every type but
    /// `OFF_AMAZON_PURCHASES`.
    pub fn allows_negative_values(&self) -> bool {
        self.conversion_type.as_deref() != Some("OFF_AMAZON_PURCHASES")
    }
}

/// A name that names no definition, or several.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameLookup<'d> {
    /// Exactly one definition has it (ignoring case).
    One(&'d Definition),
    /// None has it.
    None,
    /// Several have it.
    Several,
}

/// The advertiser's definitions, by id and by name.
#[derive(Clone, Debug, Default)]
pub struct Definitions {
    list: Vec<Definition>,
    by_id: HashMap<Arc<str>, usize>,
    by_name: HashMap<String, Vec<usize>>,
}

impl Definitions {
    /// The definitions of `list`.
    pub fn new(list: Vec<Definition>) -> Self {
        let mut by_id = HashMap::with_capacity(list.len());
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::with_capacity(list.len());
        for (i, d) in list.iter().enumerate() {
            by_id.insert(d.id.clone(), i);
            by_name.entry(d.name.to_lowercase()).or_default().push(i);
        }
        Self {
            list,
            by_id,
            by_name,
        }
    }

    /// All of them, as listed.
    pub fn list(&self) -> &[Definition] {
        &self.list
    }

    /// The definition with this id.
    pub fn by_id(&self, id: &str) -> Option<&Definition> {
        self.by_id.get(id).map(|&i| &self.list[i])
    }

    /// The definition with this name, ignoring case.
    pub fn by_name(&self, name: &str) -> NameLookup<'_> {
        // Events that rely on their type naming a definition look it up once each: a short
        // ASCII name is lowercased on the stack.
        let mut buf = [0u8; 64];
        let found = match buf.get_mut(..name.len()) {
            Some(lower) if name.is_ascii() => {
                lower.copy_from_slice(name.as_bytes());
                lower.make_ascii_lowercase();
                std::str::from_utf8(lower)
                    .ok()
                    .and_then(|l| self.by_name.get(l))
            }
            _ => self.by_name.get(&name.to_lowercase()),
        };
        match found.map(Vec::as_slice) {
            Some([one]) => NameLookup::One(&self.list[*one]),
            Some([_, _, ..]) => NameLookup::Several,
            _ => NameLookup::None,
        }
    }

    /// A definition by id, or else by name.
    pub fn by_id_or_name(&self, value: &str) -> NameLookup<'_> {
        match self.by_id(value) {
            Some(d) => NameLookup::One(d),
            None => self.by_name(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: &str, name: &str, source: &str) -> Definition {
        Definition {
            id: id.into(),
            name: name.into(),
            conversion_type: Some("OFF_AMAZON_PURCHASES".into()),
            source: Some(DefinitionSource::parse(source)),
        }
    }

    #[test]
    fn found_by_id_or_by_name_ignoring_case() {
        let all = Definitions::new(vec![
            d("1", "Purchase", "SERVER_TO_SERVER"),
            d("2", "Sign-up", "AMAZON_AD_TAG"),
            d("3", "sign-UP", "MMP"),
        ]);
        assert_eq!(all.by_id("2").map(|d| &*d.name), Some("Sign-up"));
        assert!(matches!(all.by_name("PURCHASE"), NameLookup::One(d) if &*d.id == "1"));
        assert_eq!(all.by_name("sign-up"), NameLookup::Several);
        assert_eq!(all.by_name("refund"), NameLookup::None);
        assert!(matches!(all.by_id_or_name("1"), NameLookup::One(d) if &*d.name == "Purchase"));
        assert_eq!(
            all.by_id("3").and_then(|d| d.source.clone()),
            Some(DefinitionSource::Other("MMP".into()))
        );
        assert!(!all.by_id("1").unwrap().allows_negative_values());
    }
}
