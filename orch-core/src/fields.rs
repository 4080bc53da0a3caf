//! Field selectors: `involvedObject.name=web,type!=Normal`, as Kubernetes' `fieldSelector`.
//!
//! Each kind supports a few fields, as in Kubernetes: every kind `metadata.name` and
//! `metadata.namespace`; pods `spec.nodeName` and `status.phase`; events `involvedObject.kind`,
//! `.namespace`, `.name` and `.uid`, `reason`, `type` and `source`. Only `=` (or `==`) and
//! `!=`; an absent field reads as the empty string, so `spec.nodeName=` selects the pods not
//! bound to a node. In a value, `\,`, `\=` and `\\` stand for the character itself; spaces
//! around a field's label are ignored, those of a value are part of it.

use std::fmt;
use std::str::FromStr;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::object::{Kind, Object};
use crate::validation::q;

/// The most requirements a field selector may hold.
pub const FIELD_SELECTOR_REQUIREMENTS_MAX: usize = 64;
/// The longest field selector, in bytes.
pub const FIELD_SELECTOR_BYTES_MAX: usize = 4096;

/// A field a selector can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub enum Field {
    /// `metadata.name`
    Name,
    /// `metadata.namespace`
    Namespace,
    /// A pod's `spec.nodeName`.
    NodeName,
    /// A pod's `status.phase`.
    Phase,
    /// An event's `involvedObject.kind`.
    InvolvedKind,
    /// An event's `involvedObject.namespace`.
    InvolvedNamespace,
    /// An event's `involvedObject.name`.
    InvolvedName,
    /// An event's `involvedObject.uid`.
    InvolvedUid,
    /// An event's `reason`.
    Reason,
    /// An event's `type`.
    Type,
    /// An event's `source` (its component).
    Source,
}

const FIELDS: [(Field, &str, Option<Kind>); 11] = [
    (Field::Name, "metadata.name", None),
    (Field::Namespace, "metadata.namespace", None),
    (Field::NodeName, "spec.nodeName", Some(Kind::Pod)),
    (Field::Phase, "status.phase", Some(Kind::Pod)),
    (Field::InvolvedKind, "involvedObject.kind", Some(Kind::Event)),
    (Field::InvolvedNamespace, "involvedObject.namespace", Some(Kind::Event)),
    (Field::InvolvedName, "involvedObject.name", Some(Kind::Event)),
    (Field::InvolvedUid, "involvedObject.uid", Some(Kind::Event)),
    (Field::Reason, "reason", Some(Kind::Event)),
    (Field::Type, "type", Some(Kind::Event)),
    (Field::Source, "source", Some(Kind::Event)),
];

impl Field {
    /// The field's label, as written in a selector.
    pub fn label(self) -> &'static str {
        FIELDS.iter().find(|(f, ..)| *f == self).map_or("", |(_, label, _)| label)
    }

    /// The kind whose objects have the field; none for every kind.
    fn kind(self) -> Option<Kind> {
        FIELDS.iter().find(|(f, ..)| *f == self).and_then(|(.., kind)| *kind)
    }

    /// The field's value in `obj`: empty when absent, or when the object is of another kind.
    pub fn value(self, obj: &Object) -> String {
        let text = |t: Option<&crate::text::Text>| t.map(ToString::to_string).unwrap_or_default();
        let meta = obj.meta();
        match (self, obj) {
            (Field::Name, _) => meta.name.to_string(),
            (Field::Namespace, _) => meta.namespace_str().to_owned(),
            (Field::NodeName, Object::Pod(p)) => p.spec.node_name.as_deref().unwrap_or_default().to_owned(),
            (Field::Phase, Object::Pod(p)) => p.status.phase.map(|ph| ph.as_str().to_owned()).unwrap_or_default(),
            (Field::InvolvedKind, Object::Event(e)) => text(e.involved_object.kind.as_ref()),
            (Field::InvolvedNamespace, Object::Event(e)) => text(e.involved_object.namespace.as_ref()),
            (Field::InvolvedName, Object::Event(e)) => text(e.involved_object.name.as_ref()),
            (Field::InvolvedUid, Object::Event(e)) => e.involved_object.uid.map(|u| u.to_string()).unwrap_or_default(),
            (Field::Reason, Object::Event(e)) => text(e.reason.as_ref()),
            (Field::Type, Object::Event(e)) => text(e.type_.as_ref()),
            (Field::Source, Object::Event(e)) => text(e.source.component.as_ref()),
            _ => String::new(),
        }
    }
}

/// One requirement: the field equals the value, or (`!=`) does not.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct FieldRequirement {
    /// The field.
    pub field: Field,
    /// `=`: true; `!=`: false.
    pub equals: bool,
    /// The value, unescaped.
    pub value: String,
}

/// A parsed field selector: every requirement must hold. The empty one matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct FieldSelector {
    /// The requirements, all of which must hold.
    pub requirements: Vec<FieldRequirement>,
}

/// Why a field selector was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("fieldSelector: Invalid value: {}: {reason}", q(.term))]
pub struct FieldSelectorError {
    /// The offending term (or the whole selector).
    pub term: String,
    /// What is wrong with it.
    pub reason: String,
}

fn err(term: &str, reason: impl Into<String>) -> FieldSelectorError {
    FieldSelectorError { term: crate::text::cut(term.trim(), 256).to_owned(), reason: reason.into() }
}

impl FieldSelector {
    /// Parses `text` for objects of `kind` (none: a selection across kinds, where only the
    /// `metadata` fields apply).
    pub fn parse(text: &str, kind: Option<Kind>) -> Result<Self, FieldSelectorError> {
        if text.len() > FIELD_SELECTOR_BYTES_MAX {
            return Err(err(text, format!("must be at most {FIELD_SELECTOR_BYTES_MAX} bytes")));
        }
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let terms = split_unescaped(text, ',');
        if terms.len() > FIELD_SELECTOR_REQUIREMENTS_MAX {
            return Err(err(text, format!("must have at most {FIELD_SELECTOR_REQUIREMENTS_MAX} requirements")));
        }
        let requirements = terms.into_iter().map(|term| parse_term(term, kind)).collect::<Result<_, _>>()?;
        Ok(Self { requirements })
    }

    /// True when the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// True when `obj` satisfies every requirement.
    pub fn matches(&self, obj: &Object) -> bool {
        self.requirements.iter().all(|r| (r.field.value(obj) == r.value) == r.equals)
    }
}

impl FromStr for FieldSelector {
    type Err = FieldSelectorError;

    /// A selector across kinds: the `metadata` fields only.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text, None)
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if r.equals { "=" } else { "!=" };
            write!(f, "{}{op}{}", r.field.label(), escape(&r.value))?;
        }
        Ok(())
    }
}

/// `value` as written in a selector: `,`, `=` and `\` escaped by a backslash.
pub fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, ',' | '=' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Splits on `sep` where it is not escaped by a backslash.
fn split_unescaped(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == sep => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_term(term: &str, kind: Option<Kind>) -> Result<FieldRequirement, FieldSelectorError> {
    // The first unescaped `=` ends the field; a `!` or `=` next to it is the operator's.
    let Some(at) = split_unescaped(term, '=').first().map(|f| f.len()).filter(|n| *n < term.len()) else {
        return Err(err(term, "must be `field=value` or `field!=value`"));
    };
    let (mut field, mut rest) = (&term[..at], &term[at + 1..]);
    let mut equals = true;
    if let Some(f) = field.strip_suffix('!') {
        field = f;
        equals = false;
    } else if let Some(r) = rest.strip_prefix('=') {
        rest = r;
    }
    let label = field.trim();
    let Some(&(field, _, for_kind)) = FIELDS.iter().find(|(_, l, _)| *l == label) else {
        return Err(err(term, format!("field label not supported: {}", q(label))));
    };
    if for_kind.is_some() && for_kind != kind {
        let of = kind.map_or_else(|| "a selection across kinds".to_owned(), |k| k.plural().to_owned());
        return Err(err(term, format!("field label not supported for {of}: {}", q(label))));
    }
    debug_assert_eq!(field.kind(), for_kind);
    let mut value = String::with_capacity(rest.len());
    let mut escaped = false;
    for c in rest.chars() {
        if escaped || c != '\\' {
            value.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    if escaped {
        return Err(err(term, "a value may not end in a lone `\\`"));
    }
    Ok(FieldRequirement { field, equals, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(yaml: &str) -> Vec<Object> {
        crate::manifest::parse_manifests(yaml).expect("valid")
    }

    const EVENT: &str = "apiVersion: v1\nkind: Event\nmetadata: {name: web-0.1, namespace: shop}\n\
                         involvedObject: {kind: Pod, name: web-0, namespace: shop}\nreason: Scheduled\n\
                         type: Normal\nsource: {component: default-scheduler}\n";

    #[test]
    fn selects_events_by_what_they_are_about() {
        let event = &objects(EVENT)[0];
        let pick = |text: &str| FieldSelector::parse(text, Some(Kind::Event)).expect("valid").matches(event);
        assert!(pick("involvedObject.kind=Pod,involvedObject.name=web-0"));
        assert!(pick("involvedObject.name==web-0,type!=Warning,source=default-scheduler"));
        assert!(pick("metadata.namespace=shop,reason=Scheduled,involvedObject.namespace=shop"));
        assert!(!pick("involvedObject.name=web-1"));
        assert!(!pick("involvedObject.kind=Pod,type=Warning"));
        // An absent field reads as empty.
        assert!(pick("involvedObject.uid="));
        assert!(pick(""));
    }

    #[test]
    fn selects_pods_by_node_and_phase() {
        let pods = objects(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {nodeName: n1, containers: [{name: c, image: i}]}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec: {containers: [{name: c, image: i}]}\n",
        );
        let pick = |text: &str| -> Vec<String> {
            let s = FieldSelector::parse(text, Some(Kind::Pod)).expect("valid");
            pods.iter().filter(|p| s.matches(p)).map(|p| p.meta().name.to_string()).collect()
        };
        assert_eq!(pick("spec.nodeName=n1"), ["a"]);
        assert_eq!(pick("spec.nodeName="), ["b"]);
        assert_eq!(pick("spec.nodeName!=,metadata.name!=x"), ["a"]);
        assert_eq!(pick("status.phase=Running"), Vec::<String>::new());
    }

    #[test]
    fn escapes_round_trip() {
        let s = FieldSelector::parse(r"metadata.name=a\,b\=c\\d", Some(Kind::Pod)).expect("valid");
        assert_eq!(s.requirements[0].value, r"a,b=c\d");
        assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d");
        assert_eq!(FieldSelector::parse(&s.to_string(), Some(Kind::Pod)), Ok(s));
    }

    #[test]
    fn refuses_what_it_cannot_select_on_naming_the_field() {
        let e = FieldSelector::parse("spec.replicas=3", Some(Kind::Deployment)).expect_err("unsupported");
        assert_eq!(
            e.to_string(),
            r#"fieldSelector: Invalid value: "spec.replicas=3": field label not supported: "spec.replicas""#
        );
        let e = FieldSelector::parse("spec.nodeName=n1", Some(Kind::Event)).expect_err("not an event field");
        assert!(e.reason.contains("not supported for events"), "{e}");
        let e = FieldSelector::parse("reason=x", None).expect_err("needs a kind");
        assert!(e.reason.contains("across kinds"), "{e}");
        assert!(FieldSelector::parse("metadata.name", Some(Kind::Pod)).is_err());
        assert!(FieldSelector::parse(r"metadata.name=a\", Some(Kind::Pod)).is_err());
        let many = vec!["metadata.name=a"; FIELD_SELECTOR_REQUIREMENTS_MAX + 1].join(",");
        assert!(FieldSelector::parse(&many, Some(Kind::Pod)).expect_err("too many").reason.contains("at most"));
        let long = format!("metadata.name={}", "a".repeat(FIELD_SELECTOR_BYTES_MAX));
        assert!(FieldSelector::parse(&long, Some(Kind::Pod)).expect_err("too long").reason.contains("bytes"));
        assert!(FieldSelector::parse("metadata.name=a", None).is_ok());
    }

    proptest::proptest! {
        /// Whatever a value holds, the printed selector parses back to the same one.
        #[test]
        fn any_value_prints_and_parses_back(value in "\\PC{0,24}", equals in proptest::bool::ANY) {
            let s = FieldSelector { requirements: vec![FieldRequirement { field: Field::InvolvedName, equals, value }] };
            proptest::prop_assert_eq!(FieldSelector::parse(&s.to_string(), Some(Kind::Event)), Ok(s));
        }
    }
}
