//! Optional API keys. `Authorization: Bearer <key>`, or Basic credentials whose user name or password
//! is a key (1C's HTTPСоединение sends Basic natively). Keys are compared in constant time.

use base64::Engine;
use subtle::ConstantTimeEq;

pub fn authorized(header: Option<&str>, keys: &[String]) -> bool {
    if keys.is_empty() {
        return true;
    }
    let Some(header) = header else {
        return false;
    };
    let candidates: Vec<String> = if let Some(token) = strip_scheme(header, "bearer") {
        vec![token.trim().to_string()]
    } else if let Some(b64) = strip_scheme(header, "basic") {
        match base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(pair) => {
                let (user, pass) = pair.split_once(':').unwrap_or((pair.as_str(), ""));
                vec![user.to_string(), pass.to_string()]
            }
            None => return false,
        }
    } else {
        return false;
    };
    let mut ok = subtle::Choice::from(0u8);
    for c in &candidates {
        for k in keys {
            // Lengths leak, contents do not.
            ok |= c.as_bytes().ct_eq(k.as_bytes());
        }
    }
    bool::from(ok)
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.trim().split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_are_accepted_and_others_refused() {
        let keys = vec!["s3cret".to_string()];
        assert!(authorized(Some("Bearer s3cret"), &keys));
        assert!(authorized(Some("bearer s3cret"), &keys));
        let basic = base64::engine::general_purpose::STANDARD.encode("1c:s3cret");
        assert!(authorized(Some(&format!("Basic {basic}")), &keys));
        let basic_user = base64::engine::general_purpose::STANDARD.encode("s3cret:");
        assert!(authorized(Some(&format!("Basic {basic_user}")), &keys));
        assert!(!authorized(Some("Bearer wrong"), &keys));
        assert!(!authorized(None, &keys));
        assert!(!authorized(Some("Basic !!!"), &keys));
        assert!(authorized(None, &[]));
    }
}
