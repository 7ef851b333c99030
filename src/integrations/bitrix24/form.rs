//! Bitrix24 posts events as `application/x-www-form-urlencoded` built by PHP's `http_build_query`:
//! nested keys such as `data[PARAMS][MESSAGE]` or `data[BOT][567][access_token]`. This turns such a
//! body into a JSON tree so that events read like the JSON in Bitrix24's documentation.
//!
//! Written here rather than taken from serde_qs: that crate deserializes into typed structs, and numeric
//! keys (`data[BOT][567]`, a map keyed by bot id in PHP) are read as sequence indices there. PHP's rule
//! is simple: every bracketed segment is a map key, and `[]` appends.
//!
//! The body comes from the internet before anything is verified, so parsing is linear in its size
//! (`[]` finds the next index from a counter, not by searching), and the number of fields and the
//! nesting depth are capped. [`scan_head`] reads the few fields the token check needs without building
//! the tree, so that an unauthenticated body is refused before it is parsed.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Nesting deeper than this is refused (Bitrix24 events use at most five levels).
pub const MAX_DEPTH: usize = 8;
/// More fields than this are refused (a Bitrix24 event has a few dozen).
pub const MAX_FIELDS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum FormError {
    #[error("malformed form field {0:?}")]
    Malformed(String),
    #[error("more than {MAX_FIELDS} form fields")]
    TooManyFields,
}

fn malformed(key: &str) -> FormError {
    FormError::Malformed(crate::logsafe::truncate_chars(key, 80))
}

/// The fields needed before anything else: what the event is, its token and which portal sent it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EventHead {
    pub event: Option<String>,
    pub application_token: Option<String>,
    pub domain: Option<String>,
    pub member_id: Option<String>,
}

/// Reads `event`, `auth[application_token]`, `auth[domain]` and `auth[member_id]` in one pass over
/// the body without building anything, and counts the fields (refusing more than [`MAX_FIELDS`]).
/// A later value for the same key wins, as in PHP and in [`parse_php_form`].
pub fn scan_head(body: &[u8]) -> Result<EventHead, FormError> {
    let mut head = EventHead::default();
    for (n, (key, value)) in form_urlencoded::parse(body).enumerate() {
        if n >= MAX_FIELDS {
            return Err(FormError::TooManyFields);
        }
        let slot = match key.as_ref() {
            "event" => &mut head.event,
            "auth[application_token]" => &mut head.application_token,
            "auth[domain]" => &mut head.domain,
            "auth[member_id]" => &mut head.member_id,
            _ => continue,
        };
        *slot = Some(value.into_owned()).filter(|v| !v.is_empty());
    }
    Ok(head)
}

/// A map under construction: PHP's next `[]` index kept alongside.
#[derive(Default)]
struct Node {
    entries: BTreeMap<String, Tree>,
    /// Where `[]` appends: one past the largest integer key so far.
    next_index: u64,
}

enum Tree {
    Leaf(String),
    Map(Node),
}

impl Node {
    fn insert(&mut self, path: &[&str], value: String) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let key = if first.is_empty() {
            let k = self.next_index.to_string();
            self.next_index += 1;
            k
        } else {
            if let Ok(i) = first.parse::<u64>() {
                self.next_index = self.next_index.max(i.saturating_add(1));
            }
            first.to_string()
        };
        if rest.is_empty() {
            self.entries.insert(key, Tree::Leaf(value));
            return;
        }
        let child = self
            .entries
            .entry(key)
            .or_insert_with(|| Tree::Map(Node::default()));
        if let Tree::Leaf(_) = child {
            // `a=1&a[b]=2`: PHP replaces the scalar with an array.
            *child = Tree::Map(Node::default());
        }
        if let Tree::Map(node) = child {
            node.insert(rest, value);
        }
    }

    fn into_json(self) -> Value {
        let mut map = Map::new();
        for (k, v) in self.entries {
            map.insert(
                k,
                match v {
                    Tree::Leaf(s) => Value::String(s),
                    Tree::Map(node) => node.into_json(),
                },
            );
        }
        Value::Object(map)
    }
}

/// Parses a PHP-style form body. A later value for the same key replaces the earlier one, as in PHP.
pub fn parse_php_form(body: &[u8]) -> Result<Value, FormError> {
    let mut root = Node::default();
    for (n, (key, value)) in form_urlencoded::parse(body).enumerate() {
        if n >= MAX_FIELDS {
            return Err(FormError::TooManyFields);
        }
        let path = split_key(&key).ok_or_else(|| malformed(&key))?;
        root.insert(&path, value.into_owned());
    }
    Ok(root.into_json())
}

/// `data[PARAMS][MESSAGE]` -> `["data", "PARAMS", "MESSAGE"]`; `a[]` -> `["a", ""]`.
fn split_key(key: &str) -> Option<Vec<&str>> {
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if head.is_empty() {
        return None;
    }
    let mut path = vec![head];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        path.push(&inner[..end]);
        rest = &inner[end + 1..];
        if path.len() > MAX_DEPTH {
            return None;
        }
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    #[test]
    fn nested_php_keys_become_a_json_tree() {
        let body = "event=ONIMBOTMESSAGEADD&data%5BPARAMS%5D%5BMESSAGE%5D=%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82+%21\
                    &data[BOT][567][access_token]=tok&data[BOT][567][BOT_ID]=567&auth[application_token]=abc\
                    &list[]=a&list[]=b&idx[5]=x&idx[]=y";
        let v = parse_php_form(body.as_bytes()).unwrap();
        assert_eq!(
            v,
            json!({
                "event": "ONIMBOTMESSAGEADD",
                "data": {
                    "PARAMS": {"MESSAGE": "Привет !"},
                    "BOT": {"567": {"access_token": "tok", "BOT_ID": "567"}}
                },
                "auth": {"application_token": "abc"},
                "list": {"0": "a", "1": "b"},
                "idx": {"5": "x", "6": "y"}
            })
        );
        let head = scan_head(body.as_bytes()).unwrap();
        assert_eq!(head.event.as_deref(), Some("ONIMBOTMESSAGEADD"));
        assert_eq!(head.application_token.as_deref(), Some("abc"));
    }

    #[test]
    fn unbalanced_brackets_and_deep_nesting_are_errors() {
        assert!(parse_php_form(b"data[PARAMS=1").is_err());
        assert!(parse_php_form(b"[x]=1").is_err());
        assert!(parse_php_form(b"a[1][2][3][4][5][6][7]=1").is_ok());
        assert!(parse_php_form(b"a[1][2][3][4][5][6][7][8]=1").is_err());
    }

    #[test]
    fn many_append_keys_are_capped_and_quick() {
        // 16,000 `a[]` keys took 11 s with the old quadratic parser.
        let body = "a[]=1&".repeat(16_000);
        let started = Instant::now();
        assert!(matches!(
            parse_php_form(body.as_bytes()),
            Err(FormError::TooManyFields)
        ));
        assert!(matches!(
            scan_head(body.as_bytes()),
            Err(FormError::TooManyFields)
        ));
        // Within the cap, appending stays linear.
        let body = "a[]=1&".repeat(MAX_FIELDS - 1);
        let v = parse_php_form(body.as_bytes()).unwrap();
        assert_eq!(v["a"].as_object().unwrap().len(), MAX_FIELDS - 1);
        eprintln!(
            "16,000 `[]` keys refused and {} parsed in {:?}",
            MAX_FIELDS - 1,
            started.elapsed()
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
}
