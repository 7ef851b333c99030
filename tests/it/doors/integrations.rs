//! 1C:Enterprise: the exact request integrations/1c/NovaPayAssistant.bsl sends (Basic auth with the key
//! as password, a UTF-8 BOM before the JSON, `charset=utf-8`), answered in the prototype's shape.

use serde_json::Value;

use crate::support::{send, spawn_app, AppOptions};

#[test]
fn the_1c_module_request_is_answered() {
    let app = spawn_app(AppOptions {
        config: novapay::http::ServerConfig {
            api_keys: vec!["1c-secret".into()],
            ..Default::default()
        },
        ..AppOptions::default()
    });
    let bsl = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("integrations/1c/NovaPayAssistant.bsl"),
    )
    .unwrap();
    // The module really sends what this test sends.
    for needle in [
        "\"/api/v1/query\"",
        "application/json; charset=utf-8",
        "ИспользованиеByteOrderMark.Использовать",
        "Новый HTTPСоединение(Настройки.Сервер, Настройки.Порт, \"1c\", Настройки.КлючAPI",
        "\"session_id\"",
        "\"source_documents\"",
    ] {
        assert!(
            bsl.contains(needle),
            "the BSL module no longer has {needle}"
        );
    }
    // What ЗаписьJSON + УстановитьТелоИзСтроки(..., UTF8, BOM) put on the wire.
    let mut body = vec![0xEF, 0xBB, 0xBF];
    body.extend_from_slice(
        "{\r\n\"query\": \"Сколько стоит внутренний перевод?\",\r\n\"user_id\": \"Иванов\"\r\n}"
            .as_bytes(),
    );
    let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "1c:1c-secret");
    let req = || {
        ureq::post(&app.url("/api/v1/query"))
            .set("Content-Type", "application/json; charset=utf-8")
            .set("Accept", "application/json")
            .set("Authorization", &format!("Basic {basic}"))
    };
    let (status, v) = send(req(), &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["query"], "Сколько стоит внутренний перевод?");
    let docs = v["source_documents"].as_array().unwrap();
    assert!(
        docs.iter().any(|d| d["source"] == "komissii-i-limity.md"),
        "{:?}",
        docs.iter().map(|d| &d["source"]).collect::<Vec<_>>()
    );
    assert!(v["response"].is_string() && v["session_id"].is_string());
    // A follow-up in the same dialogue, as the module's second call does.
    let mut next = vec![0xEF, 0xBB, 0xBF];
    next.extend_from_slice(
        serde_json::json!({"query": "А для международных?", "session_id": v["session_id"]})
            .to_string()
            .as_bytes(),
    );
    let (status, w): (u16, Value) = send(req(), &next);
    assert_eq!(status, 200, "{w}");
    assert_eq!(w["session_id"], v["session_id"]);
    // A wrong key is refused with the JSON error the module reports.
    let bad = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "1c:wrong");
    let (status, e) = send(
        ureq::post(&app.url("/api/v1/query"))
            .set("Content-Type", "application/json; charset=utf-8")
            .set("Authorization", &format!("Basic {bad}")),
        &body,
    );
    assert_eq!(status, 401);
    assert_eq!(e["error"]["code"], "unauthorized");
}
