//! Transforms: how a source item becomes a target item, and how a source
//! change finds its target key.
//!
//! One implementation runs in the applier, in the scan copy and in verify,
//! so all three agree by construction. A transform is pure and deterministic.
//!
//! Declarative specs cover the common cases (JSON or YAML):
//!
//! ```yaml
//! key:                      # the target key attributes, derived from the source item
//!   - attribute: UUID
//!     uuidv5: { from: [Name] }          # optional namespace (a UUID), separator
//! rename: { Name: DisplayName }          # old -> new
//! copy:   { Email: ContactEmail }        # from -> to (keeps the original)
//! drop:   [Legacy]
//! set:    { Schema: { N: "2" } }         # DynamoDB JSON values
//! ```
//!
//! Key derivations: `uuidv5` (of the attributes' canonical text, joined by
//! `separator`), `concat` (with a separator), `convert` (S <-> N), `copy`.
//! Custom logic implements [`Transform`].
//!
//! **Invariant:** a REMOVE maps to its target key through the keys alone when
//! the derivation needs only key attributes, else through the old image; if
//! neither can, the change is refused (never guessed).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::item::{check_number, type_name, AttributeValue, Attrs, NumberError};

/// Why a transform could not map an item or a change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error("attribute {0} is missing, and the target key needs it")]
    Missing(String),
    #[error("attribute {attr} is {found}; the key derivation needs a string or number")]
    NotScalar { attr: String, found: &'static str },
    #[error("cannot convert attribute {attr} to {to}: it {why}")]
    NotNumber {
        attr: String,
        to: &'static str,
        why: NumberError,
    },
    #[error("a delete needs attributes {0:?} to find its target key, and the stream record has no old image (use NEW_AND_OLD_IMAGES)")]
    NoOldImage(Vec<String>),
    #[error("the target key comes from non-key attributes, so a target key can pass from one source item to another; telling whose item a target key holds needs the source key in the target item, and the transform drops or overwrites {0:?}")]
    NoOwner(Vec<String>),
}

/// Why a spec is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("transform spec is not valid JSON or YAML: {0}")]
    Parse(String),
    #[error("transform spec: {0}")]
    Invalid(String),
}

/// A transform, declarative or custom.
pub trait Transform: Send + Sync + std::fmt::Debug {
    /// The target item for a full source image.
    fn item(&self, source: &Attrs) -> Result<Attrs, TransformError>;

    /// The source attributes the target key is derived from.
    fn key_sources(&self) -> BTreeSet<String>;

    /// The target key attribute names.
    fn target_key_names(&self) -> Vec<String>;

    /// The target key of a source item (any image holding the key sources).
    fn key(&self, image: &Attrs) -> Result<Attrs, TransformError> {
        let item = self.item(image)?;
        let mut key = Attrs::new();
        for name in self.target_key_names() {
            let v = item
                .get(&name)
                .ok_or_else(|| TransformError::Missing(name.clone()))?;
            key.insert(name, v.clone());
        }
        Ok(key)
    }

    /// The target key of a change: from the source keys when they suffice,
    /// else from the old image (or its projection onto the key sources),
    /// completed with the keys.
    fn change_key(&self, keys: &Attrs, old: Option<&Attrs>) -> Result<Attrs, TransformError> {
        let need = self.key_sources();
        if need.iter().all(|a| keys.contains_key(a)) {
            return self.key_only(keys);
        }
        match old {
            Some(image) => self.key_only(&with_keys(image, keys)),
            None => Err(TransformError::NoOldImage(need.into_iter().collect())),
        }
    }

    /// The target key from an image that may hold only some attributes.
    fn key_only(&self, image: &Attrs) -> Result<Attrs, TransformError>;

    /// True when the target key is the source key unchanged.
    fn is_identity_key(&self) -> bool {
        false
    }

    /// Whether a target key can pass from one source item to another over
    /// time: the target key is derived from an attribute that is not a
    /// source key attribute (`uuidv5(Email)`: another item can take the
    /// email later), or from only part of the source key. Then writes
    /// must check whose item they replace or delete.
    fn reuses_keys(&self, source_key_names: &mut dyn Iterator<Item = &String>) -> bool {
        if self.is_identity_key() {
            return false;
        }
        let names: BTreeSet<&String> = source_key_names.collect();
        let sources = self.key_sources();
        // A non-key attribute in the key, or a key that leaves out part of
        // the source key: target keys are not one source item's alone.
        sources.iter().any(|a| !names.contains(a)) || names.iter().any(|n| !sources.contains(*n))
    }

    /// How two source items can map to one target key although the
    /// transform does not reuse keys (`None`: they cannot, as far as the
    /// spec says; see `transform/collide.rs`).
    fn key_collisions(&self) -> Option<String> {
        None
    }

    /// The source key as a target item made from that source item carries
    /// it (under the names the transform gives it): how a delete tells
    /// whose item a target key holds. `None` when the transform drops or
    /// overwrites a source key attribute.
    fn owner_attrs(&self, source_keys: &Attrs) -> Option<Attrs> {
        Some(source_keys.clone())
    }

    /// The source key of the item a target item was made from, when the
    /// target item still carries the source key attributes (`None` when the
    /// transform dropped them). Used to find where an extra target item
    /// came from; never guessed.
    fn source_key_of(&self, target_item: &Attrs, source_key_names: &[String]) -> Option<Attrs> {
        crate::diff::key_of(target_item, source_key_names)
    }
}

/// `image` completed with the item's key attributes (an old image shrunk to
/// its key sources may lack them; the keys of a change never change).
pub fn with_keys(image: &Attrs, keys: &Attrs) -> Attrs {
    if keys.keys().all(|k| image.contains_key(k)) {
        return image.clone();
    }
    let mut out = image.clone();
    for (k, v) in keys {
        out.entry(k.clone()).or_insert_with(|| v.clone());
    }
    out
}

/// The attributes of `image` named in `names` (the key sources a delete or a
/// moved item needs), or `None` when it holds none of them.
pub fn project(image: &Attrs, names: &BTreeSet<String>) -> Option<Attrs> {
    let out: Attrs = names
        .iter()
        .filter_map(|n| image.get(n).map(|v| (n.clone(), v.clone())))
        .collect();
    (!out.is_empty()).then_some(out)
}

/// No transform: the target item is the source item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub key_names: Vec<String>,
}

impl Transform for Identity {
    fn item(&self, source: &Attrs) -> Result<Attrs, TransformError> {
        Ok(source.clone())
    }
    fn key_sources(&self) -> BTreeSet<String> {
        self.key_names.iter().cloned().collect()
    }
    fn target_key_names(&self) -> Vec<String> {
        self.key_names.clone()
    }
    fn key_only(&self, image: &Attrs) -> Result<Attrs, TransformError> {
        let mut key = Attrs::new();
        for n in &self.key_names {
            let v = image
                .get(n)
                .ok_or_else(|| TransformError::Missing(n.clone()))?;
            key.insert(n.clone(), v.clone());
        }
        Ok(key)
    }
    fn is_identity_key(&self) -> bool {
        true
    }
}

/// A scalar type for `convert`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum Scalar {
    S,
    N,
}

/// How one target key attribute is derived.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyRule {
    pub attribute: String,
    #[serde(default)]
    pub uuidv5: Option<Uuidv5>,
    #[serde(default)]
    pub concat: Option<Concat>,
    #[serde(default)]
    pub convert: Option<Convert>,
    #[serde(default)]
    pub copy: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Uuidv5 {
    /// A UUID; default: the RFC 4122 OID namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    pub from: Vec<String>,
    #[serde(default = "default_separator")]
    pub separator: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Concat {
    pub from: Vec<String>,
    #[serde(default = "default_separator")]
    pub separator: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Convert {
    pub from: String,
    pub to: Scalar,
}

fn default_separator() -> String {
    "#".into()
}

/// The declarative spec.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    pub key: Vec<KeyRule>,
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    #[serde(default)]
    pub copy: BTreeMap<String, String>,
    #[serde(default)]
    pub drop: Vec<String>,
    #[serde(default)]
    pub set: BTreeMap<String, AttributeValue>,
}

/// A validated declarative transform.
#[derive(Clone, Debug)]
pub struct Declarative {
    spec: Spec,
    rules: Vec<(String, Derivation)>,
    /// Source key names, used as the target key when `key` is empty.
    source_keys: Vec<String>,
}

#[derive(Clone, Debug)]
enum Derivation {
    Uuid(uuid::Uuid, Vec<String>, String),
    Concat(Vec<String>, String),
    Convert(String, Scalar),
    Copy(String),
}

impl Derivation {
    fn sources(&self) -> Vec<String> {
        match self {
            Derivation::Uuid(_, f, _) | Derivation::Concat(f, _) => f.clone(),
            Derivation::Convert(f, _) | Derivation::Copy(f) => vec![f.clone()],
        }
    }

    fn derive(&self, image: &Attrs) -> Result<AttributeValue, TransformError> {
        let text = |attr: &String| -> Result<String, TransformError> {
            match image.get(attr) {
                None => Err(TransformError::Missing(attr.clone())),
                Some(AttributeValue::S(s)) => Ok(s.clone()),
                // DynamoDB stores numbers normalised, so every image (stream,
                // scan, get) spells a number the same way.
                Some(AttributeValue::N(n)) => Ok(n.clone()),
                Some(other) => Err(TransformError::NotScalar {
                    attr: attr.clone(),
                    found: type_name(other),
                }),
            }
        };
        let join = |from: &[String], sep: &str| -> Result<String, TransformError> {
            Ok(from
                .iter()
                .map(text)
                .collect::<Result<Vec<_>, _>>()?
                .join(sep))
        };
        Ok(match self {
            Derivation::Uuid(ns, from, sep) => {
                AttributeValue::S(uuid::Uuid::new_v5(ns, join(from, sep)?.as_bytes()).to_string())
            }
            Derivation::Concat(from, sep) => AttributeValue::S(join(from, sep)?),
            Derivation::Copy(from) => image
                .get(from)
                .cloned()
                .ok_or_else(|| TransformError::Missing(from.clone()))?,
            Derivation::Convert(from, Scalar::S) => AttributeValue::S(text(from)?),
            Derivation::Convert(from, Scalar::N) => {
                let t = text(from)?.trim().to_string();
                // DynamoDB's rules, not f64's: "NaN", "inf" and "1e400"
                // parse as floats but DynamoDB refuses them mid-copy.
                check_number(&t).map_err(|why| TransformError::NotNumber {
                    attr: from.clone(),
                    to: "N",
                    why,
                })?;
                AttributeValue::N(t)
            }
        })
    }
}

impl Spec {
    /// Parses a JSON or YAML spec (not yet validated: see [`Declarative::new`]).
    pub fn parse(text: &str) -> Result<Spec, SpecError> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))
        }
    }
}

impl Declarative {
    /// Parses a JSON or YAML spec for a source table keyed on `source_keys`.
    pub fn parse(text: &str, source_keys: &[String]) -> Result<Self, SpecError> {
        Self::new(Spec::parse(text)?, source_keys)
    }

    /// The spec it was made from.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn new(spec: Spec, source_keys: &[String]) -> Result<Self, SpecError> {
        let mut rules = Vec::new();
        for r in &spec.key {
            let given = [
                r.uuidv5.is_some(),
                r.concat.is_some(),
                r.convert.is_some(),
                r.copy.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if given != 1 {
                return Err(SpecError::Invalid(format!(
                    "key attribute {} needs exactly one of uuidv5, concat, convert, copy",
                    r.attribute
                )));
            }
            let d = if let Some(u) = &r.uuidv5 {
                let ns = match &u.namespace {
                    None => uuid::Uuid::NAMESPACE_OID,
                    Some(s) => uuid::Uuid::parse_str(s).map_err(|_| {
                        SpecError::Invalid(format!("uuidv5 namespace {s:?} is not a UUID"))
                    })?,
                };
                Derivation::Uuid(ns, u.from.clone(), u.separator.clone())
            } else if let Some(c) = &r.concat {
                Derivation::Concat(c.from.clone(), c.separator.clone())
            } else if let Some(c) = &r.convert {
                Derivation::Convert(c.from.clone(), c.to)
            } else {
                Derivation::Copy(r.copy.clone().unwrap_or_default())
            };
            if d.sources().is_empty() {
                return Err(SpecError::Invalid(format!(
                    "key attribute {} derives from no attribute",
                    r.attribute
                )));
            }
            rules.push((r.attribute.clone(), d));
        }
        let t = Declarative {
            spec,
            rules,
            source_keys: source_keys.to_vec(),
        };
        if t.spec.key.is_empty() {
            // The target key is the source key: every source key attribute
            // must reach the target item unchanged, under its own name (a
            // `copy`, `rename` or `set` onto it would move items to other
            // keys than their deletes go to).
            for k in source_keys {
                if t.key_location(k).as_deref() != Some(k.as_str()) {
                    return Err(SpecError::Invalid(format!(
                        "source key {k} is renamed, dropped or overwritten; derive the target key with `key:`"
                    )));
                }
            }
        }
        Ok(t)
    }
}

impl Transform for Declarative {
    fn item(&self, source: &Attrs) -> Result<Attrs, TransformError> {
        let mut derived = Vec::new();
        for (name, d) in &self.rules {
            derived.push((name.clone(), d.derive(source)?));
        }
        let mut out = source.clone();
        for (from, to) in &self.spec.copy {
            if let Some(v) = source.get(from) {
                out.insert(to.clone(), v.clone());
            }
        }
        for (old, new) in &self.spec.rename {
            if let Some(v) = out.remove(old) {
                out.insert(new.clone(), v);
            }
        }
        for d in &self.spec.drop {
            out.remove(d);
        }
        for (k, v) in &self.spec.set {
            out.insert(k.clone(), v.clone());
        }
        for (k, v) in derived {
            out.insert(k, v);
        }
        Ok(out)
    }

    fn key_sources(&self) -> BTreeSet<String> {
        if self.rules.is_empty() {
            self.source_keys.iter().cloned().collect()
        } else {
            self.rules.iter().flat_map(|(_, d)| d.sources()).collect()
        }
    }

    fn key_collisions(&self) -> Option<String> {
        collide::why(self)
    }

    fn target_key_names(&self) -> Vec<String> {
        if self.rules.is_empty() {
            self.source_keys.clone()
        } else {
            self.rules.iter().map(|(n, _)| n.clone()).collect()
        }
    }

    fn key_only(&self, image: &Attrs) -> Result<Attrs, TransformError> {
        let mut key = Attrs::new();
        if self.rules.is_empty() {
            for k in &self.source_keys {
                let v = image
                    .get(k)
                    .ok_or_else(|| TransformError::Missing(k.clone()))?;
                key.insert(k.clone(), v.clone());
            }
        } else {
            for (name, d) in &self.rules {
                key.insert(name.clone(), d.derive(image)?);
            }
        }
        Ok(key)
    }

    fn is_identity_key(&self) -> bool {
        self.rules.is_empty()
    }

    fn owner_attrs(&self, source_keys: &Attrs) -> Option<Attrs> {
        let mut out = Attrs::new();
        for (name, value) in source_keys {
            out.insert(self.key_location(name)?, value.clone());
        }
        Some(out)
    }

    fn source_key_of(&self, target_item: &Attrs, source_key_names: &[String]) -> Option<Attrs> {
        let mut key = Attrs::new();
        for name in source_key_names {
            let found = target_item.get(&self.key_location(name)?)?;
            key.insert(name.clone(), found.clone());
        }
        Some(key)
    }
}

impl Declarative {
    /// The target attribute that surely holds source attribute `name`'s
    /// value, following `item`'s steps (copy, rename, drop, set, derived
    /// keys): `None` when every copy of it may be dropped or overwritten.
    fn key_location(&self, name: &str) -> Option<String> {
        let mut at: BTreeSet<String> = BTreeSet::from([name.to_string()]);
        for (from, to) in &self.spec.copy {
            if from == name {
                at.insert(to.clone());
            } else {
                at.remove(to);
            }
        }
        for (old, new) in &self.spec.rename {
            if at.remove(old) {
                at.insert(new.clone());
            } else {
                // Overwritten when the item has `old`.
                at.remove(new);
            }
        }
        for d in &self.spec.drop {
            at.remove(d);
        }
        for k in self.spec.set.keys() {
            at.remove(k);
        }
        for (k, _) in &self.rules {
            at.remove(k);
        }
        // Prefer the attribute's own name, then its first other place.
        if at.contains(name) {
            return Some(name.to_string());
        }
        at.into_iter().next()
    }
}

/// Whether the transform's target items tell whose they are, when target
/// keys can pass between source items (see [`Transform::reuses_keys`]).
pub fn owner_supported(t: &dyn Transform, source_keys: &[String]) -> Result<(), TransformError> {
    if t.reuses_keys(&mut source_keys.iter()) {
        let probe: Attrs = source_keys
            .iter()
            .map(|k| (k.clone(), AttributeValue::S(String::new())))
            .collect();
        if t.owner_attrs(&probe).is_none() {
            return Err(TransformError::NoOwner(source_keys.to_vec()));
        }
    }
    Ok(())
}

/// Whether a stream view carries what REMOVEs need to find their target key.
pub fn remove_mapping_supported(
    t: &dyn Transform,
    source_keys: &[String],
    stream_view: Option<&str>,
) -> Result<(), String> {
    let need: Vec<String> = t
        .key_sources()
        .into_iter()
        .filter(|a| !source_keys.contains(a))
        .collect();
    if need.is_empty() {
        return Ok(());
    }
    owner_supported(t, source_keys).map_err(|e| e.to_string())?;
    match stream_view {
        Some("NEW_AND_OLD_IMAGES") | Some("OLD_IMAGE") => Ok(()),
        v => Err(format!(
            "the target key is derived from {need:?}, which are not source key attributes, so a delete must read them from the old image; the stream view {} has none: use NEW_AND_OLD_IMAGES",
            v.unwrap_or("(no stream)")
        )),
    }
}

mod collide;
#[cfg(test)]
mod tests;
