//! Bitrix24 posts events as `application/x-www-form-urlencoded` built by PHP's `http_build_query`:
//! nested keys such as `data[PARAMS][MESSAGE]` or `data[BOT][567][access_token]`. This turns such a
//! body into a JSON tree so that events read like the JSON in Bitrix24's documentation.
//!
//! Written here rather than taken from serde_qs: that crate deserializes into typed structs, and numeric
//! keys (`data[BOT][567]`, a map keyed by bot id in PHP) are read as sequence indices there. PHP's rule
//! is simple: every bracketed segment is a map key, and `[]` appends.

use serde_json::{Map, Value};

/// Nesting deeper than this is refused (Bitrix24 events use at most five levels).
const MAX_DEPTH: usize = 16;

#[derive(Debug, thiserror::Error)]
#[error("malformed form field {0:?}")]
pub struct FormError(pub String);

/// Parses a PHP-style form body. A later value for the same key replaces the earlier one, as in PHP.
pub fn parse_php_form(body: &[u8]) -> Result<Value, FormError> {
    let mut root = Map::new();
    for (key, value) in form_urlencoded::parse(body) {
        let path = split_key(&key).ok_or_else(|| FormError(key.to_string()))?;
        insert(&mut root, &path, Value::String(value.into_owned()))
            .map_err(|_| FormError(key.to_string()))?;
    }
    Ok(Value::Object(root))
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

fn insert(map: &mut Map<String, Value>, path: &[&str], value: Value) -> Result<(), ()> {
    let (first, rest) = path.split_first().ok_or(())?;
    let key = if first.is_empty() {
        // `[]` appends: the next free integer key, as PHP does.
        (0..)
            .map(|i: usize| i.to_string())
            .find(|k| !map.contains_key(k))
            .ok_or(())?
    } else {
        first.to_string()
    };
    if rest.is_empty() {
        map.insert(key, value);
        return Ok(());
    }
    let child = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !child.is_object() {
        // `a=1&a[b]=2`: PHP replaces the scalar with an array.
        *child = Value::Object(Map::new());
    }
    match child {
        Value::Object(m) => insert(m, rest, value),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_php_keys_become_a_json_tree() {
        let body = "event=ONIMBOTMESSAGEADD&data%5BPARAMS%5D%5BMESSAGE%5D=%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82+%21\
                    &data[BOT][567][access_token]=tok&data[BOT][567][BOT_ID]=567&auth[application_token]=abc\
                    &list[]=a&list[]=b";
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
                "list": {"0": "a", "1": "b"}
            })
        );
    }

    #[test]
    fn unbalanced_brackets_are_an_error() {
        assert!(parse_php_form(b"data[PARAMS=1").is_err());
        assert!(parse_php_form(b"[x]=1").is_err());
    }
}
