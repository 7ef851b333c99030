//! API keys and who the caller is. `Authorization: Bearer <key>`, or Basic credentials whose user name
//! or password is a key (1C's HTTPСоединение sends Basic natively). Keys are compared in constant time.
//!
//! A caller is identified by a fingerprint of its key (a hash, never the key), which becomes the owner
//! of the sessions it creates. Administrator keys (`NOVAPAY_ADMIN_KEYS`) are API keys too and may also
//! read any caller's session, for support staff.

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The owner recorded for sessions created while the server has no keys at all.
pub const ANONYMOUS: &str = "anonymous";

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// What sessions record as their owner: `key:<hash prefix>`, or [`ANONYMOUS`].
    pub owner: String,
    pub admin: bool,
}

impl Caller {
    pub fn anonymous() -> Self {
        Self {
            owner: ANONYMOUS.into(),
            admin: false,
        }
    }
}

/// A key's fingerprint: stable across restarts, so sessions stay with their key; 128 bits of SHA-256,
/// which tells keys apart without storing anything that would authenticate.
pub fn fingerprint(key: &str) -> String {
    let digest = Sha256::digest(format!("novapay-session-owner\0{key}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("key:{hex}")
}

/// The caller behind `header`, or `None` when keys are configured and none matches. Without any
/// keys every caller is [`Caller::anonymous`].
pub fn authenticate(
    header: Option<&str>,
    api_keys: &[String],
    admin_keys: &[String],
) -> Option<Caller> {
    if api_keys.is_empty() && admin_keys.is_empty() {
        return Some(Caller::anonymous());
    }
    let header = header?;
    let candidates: Vec<String> = if let Some(token) = strip_scheme(header, "bearer") {
        vec![token.trim().to_string()]
    } else if let Some(b64) = strip_scheme(header, "basic") {
        let pair = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())?;
        let (user, pass) = pair.split_once(':').unwrap_or((pair.as_str(), ""));
        vec![user.to_string(), pass.to_string()]
    } else {
        return None;
    };
    // Every key is compared, matched or not, so that timing does not tell which one matched.
    let mut matched: Option<(&String, bool)> = None;
    for (key, admin) in api_keys
        .iter()
        .map(|k| (k, false))
        .chain(admin_keys.iter().map(|k| (k, true)))
    {
        let mut hit = subtle::Choice::from(0u8);
        for c in &candidates {
            // Lengths leak, contents do not.
            hit |= c.as_bytes().ct_eq(key.as_bytes());
        }
        if bool::from(hit) && matched.is_none_or(|(_, a)| !a) {
            matched = Some((key, admin));
        }
    }
    matched.map(|(key, admin)| Caller {
        owner: fingerprint(key),
        admin,
    })
}

/// Whether `header` carries one of `keys` (or `keys` is empty).
pub fn authorized(header: Option<&str>, keys: &[String]) -> bool {
    authenticate(header, keys, &[]).is_some()
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

    #[test]
    fn each_key_is_its_own_caller_and_admin_keys_are_marked() {
        let api = vec!["k-a".to_string(), "k-b".to_string()];
        let admin = vec!["k-admin".to_string()];
        let a = authenticate(Some("Bearer k-a"), &api, &admin).unwrap();
        let b = authenticate(Some("Bearer k-b"), &api, &admin).unwrap();
        let boss = authenticate(Some("Bearer k-admin"), &api, &admin).unwrap();
        assert_ne!(a.owner, b.owner);
        assert!(!a.admin && !b.admin && boss.admin);
        assert!(
            !a.owner.contains("k-a"),
            "the key itself is never the owner"
        );
        assert_eq!(a, authenticate(Some("Bearer k-a"), &api, &admin).unwrap());
        // Admin keys alone still require a key.
        assert!(authenticate(None, &[], &admin).is_none());
        assert_eq!(authenticate(None, &[], &[]), Some(Caller::anonymous()));
    }
}
