//! Label selectors: matching, conversion from [`LabelSelector`], and the string form
//! `app=web,tier!=db,env in (a,b),!legacy` used on the command line.

use std::fmt;
use std::str::FromStr;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::meta::{LabelSelector, SelectorOperator};
use crate::strmap::StrMap;
use crate::validation::{is_label_value, is_qualified_name};

/// The most requirements a selector may hold.
pub const SELECTOR_REQUIREMENTS_MAX: usize = 64;
/// The most values an `in`/`notin` requirement may list.
pub const SELECTOR_VALUES_MAX: usize = 64;

/// One requirement of a [`Selector`].
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub enum Requirement {
    /// `key=value` (or `key==value`).
    Equals(String, String),
    /// `key!=value`: the label is absent or has another value.
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)`: the label is absent or has none of the values.
    NotIn(String, Vec<String>),
    /// `key`: the label is present.
    Exists(String),
    /// `!key`: the label is absent.
    DoesNotExist(String),
}

impl Requirement {
    /// True when `labels` satisfy the requirement.
    pub fn matches(&self, labels: &StrMap) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => !labels.get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Equals(k, v) => write!(f, "{k}={v}"),
            Requirement::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(",")),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(",")),
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::DoesNotExist(k) => write!(f, "!{k}"),
        }
    }
}

/// A parsed label selector: all requirements must hold. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct Selector {
    /// The requirements, all of which must hold.
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches everything.
    pub const fn everything() -> Self {
        Self { requirements: Vec::new() }
    }

    /// True when `labels` satisfy every requirement.
    pub fn matches(&self, labels: &StrMap) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True when the selector has no requirement (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl From<&LabelSelector> for Selector {
    fn from(sel: &LabelSelector) -> Self {
        let mut requirements: Vec<Requirement> =
            sel.match_labels.iter().map(|(k, v)| Requirement::Equals(k.to_owned(), v.to_owned())).collect();
        for expr in &sel.match_expressions {
            let key = expr.key.to_string();
            let values = || expr.values.iter().map(|v| v.to_string()).collect();
            requirements.push(match expr.operator {
                SelectorOperator::In => Requirement::In(key, values()),
                SelectorOperator::NotIn => Requirement::NotIn(key, values()),
                SelectorOperator::Exists => Requirement::Exists(key),
                SelectorOperator::DoesNotExist => Requirement::DoesNotExist(key),
            });
        }
        Self { requirements }
    }
}

impl LabelSelector {
    /// True when `labels` satisfy the selector (the empty selector matches everything).
    pub fn matches(&self, labels: &StrMap) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let label = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => label.is_some_and(|l| e.values.iter().any(|v| v == l)),
                    SelectorOperator::NotIn => !label.is_some_and(|l| e.values.iter().any(|v| v == l)),
                    SelectorOperator::Exists => label.is_some(),
                    SelectorOperator::DoesNotExist => label.is_none(),
                }
            })
    }

    /// True when the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Why a selector string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement {}: {reason}", crate::validation::q(.term))]
pub struct SelectorError {
    /// The offending term.
    pub term: String,
    /// What is wrong with it.
    pub reason: String,
}

fn err(term: &str, reason: impl Into<String>) -> SelectorError {
    SelectorError { term: term.trim().to_owned(), reason: reason.into() }
}

/// Splits on commas that are not inside parentheses.
fn split_terms(text: &str) -> Result<Vec<&str>, SelectorError> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0_i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(err(text, "unbalanced parentheses"));
        }
    }
    if depth != 0 {
        return Err(err(text, "unbalanced parentheses"));
    }
    terms.push(&text[start..]);
    Ok(terms)
}

fn check_key(term: &str, key: &str) -> Result<String, SelectorError> {
    let key = key.trim();
    if let Some(reason) = is_qualified_name(key) {
        return Err(err(term, format!("invalid label key {}: {reason}", crate::validation::q(key))));
    }
    Ok(key.to_owned())
}

fn check_value(term: &str, value: &str) -> Result<String, SelectorError> {
    let value = value.trim();
    if let Some(reason) = is_label_value(value) {
        return Err(err(term, format!("invalid label value {}: {reason}", crate::validation::q(value))));
    }
    Ok(value.to_owned())
}

fn parse_set(term: &str, rest: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| err(term, "expected a parenthesized list of values, as in (a,b)"))?;
    let values: Vec<String> = inner.split(',').map(|v| check_value(term, v)).collect::<Result<_, _>>()?;
    if values.len() > SELECTOR_VALUES_MAX {
        return Err(err(term, format!("must have at most {SELECTOR_VALUES_MAX} values")));
    }
    Ok(values)
}

fn parse_term(term: &str) -> Result<Requirement, SelectorError> {
    let t = term.trim();
    if t.is_empty() {
        return Err(err(term, "empty requirement"));
    }
    if let Some(key) = t.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(check_key(term, key)?));
    }
    if let Some((k, v)) = t.split_once("!=") {
        return Ok(Requirement::NotEquals(check_key(term, k)?, check_value(term, v)?));
    }
    if let Some((k, v)) = t.split_once("==") {
        return Ok(Requirement::Equals(check_key(term, k)?, check_value(term, v)?));
    }
    if let Some((k, v)) = t.split_once('=') {
        return Ok(Requirement::Equals(check_key(term, k)?, check_value(term, v)?));
    }
    let mut words = t.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default().trim_start();
    if rest.is_empty() {
        return Ok(Requirement::Exists(check_key(term, key)?));
    }
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(Requirement::NotIn(check_key(term, key)?, parse_set(term, set)?));
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(Requirement::In(check_key(term, key)?, parse_set(term, set)?));
    }
    Err(err(term, "expected one of =, ==, !=, in, notin after the key"))
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().is_empty() {
            return Ok(Self::everything());
        }
        let terms = split_terms(text)?;
        if terms.len() > SELECTOR_REQUIREMENTS_MAX {
            return Err(err(text, format!("must have at most {SELECTOR_REQUIREMENTS_MAX} requirements")));
        }
        let requirements = terms.into_iter().map(parse_term).collect::<Result<_, _>>()?;
        Ok(Self { requirements })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> StrMap {
        pairs.iter().copied().collect()
    }

    #[test]
    fn parses_the_command_line_form() {
        let sel: Selector = "app=web,tier!=db,env in (a, b),!legacy,team,zone notin (x)".parse().unwrap_or_default();
        assert_eq!(sel.requirements.len(), 6);
        assert_eq!(sel.to_string(), "app=web,tier!=db,env in (a,b),!legacy,team,zone notin (x)");
        assert!(sel.matches(&labels(&[("app", "web"), ("env", "a"), ("team", "t")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("env", "c"), ("team", "t")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("env", "a"), ("team", "t"), ("legacy", "")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("env", "a"), ("team", "t"), ("tier", "db")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("env", "a"), ("team", "t"), ("zone", "x")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("env", "a")])), "team must exist");
    }

    #[test]
    fn equals_forms_and_empty() {
        let a: Selector = "app==web".parse().unwrap_or_default();
        assert_eq!(a.requirements, vec![Requirement::Equals("app".into(), "web".into())]);
        let all: Selector = "".parse().unwrap_or_default();
        assert!(all.matches(&StrMap::new()));
    }

    #[test]
    fn refuses_malformed_terms_with_the_term_named() {
        for bad in ["app=", "=web", "env in a,b", "env in (a", "a b c", "app=web,", "-bad=x", "k=v v"] {
            let r = bad.parse::<Selector>();
            if bad == "app=" {
                // An empty value is a valid label value.
                assert!(r.is_ok(), "{bad}");
                continue;
            }
            assert!(r.is_err(), "{bad:?} should be refused");
        }
        let e = "env in (a".parse::<Selector>().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("unbalanced"), "{e}");
    }

    #[test]
    fn label_selector_matches_like_the_parsed_form() {
        let ls = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![crate::meta::LabelSelectorRequirement {
                key: "env".into(),
                operator: SelectorOperator::NotIn,
                values: vec!["prod".into()],
            }],
        };
        let sel = Selector::from(&ls);
        for l in [labels(&[("app", "web")]), labels(&[("app", "web"), ("env", "prod")]), labels(&[])] {
            assert_eq!(ls.matches(&l), sel.matches(&l));
        }
        assert!(ls.matches(&labels(&[("app", "web"), ("env", "dev")])));
    }
}
