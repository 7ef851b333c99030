//! `/openapi.json` is generated from the wire types: every route the server serves is in it, every
//! documented operation is served, and every example in it validates against its schema.

use std::collections::BTreeSet;

use novapay::http::{self, routes, ServerConfig};
use serde_json::{json, Value};

fn document() -> Value {
    serde_json::from_str(http::openapi_json()).unwrap()
}

/// (path, method) of every documented operation.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                ops.insert((path.clone(), method.clone()));
            }
        }
    }
    ops
}

/// Route paths the router registers, read from the router's source: each `.route(routes::X, ...)`
/// with the methods chained on it.
fn served_routes() -> BTreeSet<(String, String)> {
    let source = include_str!("../../../src/http/mod.rs");
    let consts = include_str!("../../../src/http/routes.rs");
    let value_of = |name: &str| -> String {
        let marker = format!("pub const {name}: &str = \"");
        let start = consts
            .find(&marker)
            .unwrap_or_else(|| panic!("no route constant {name}"))
            + marker.len();
        consts[start..].split('"').next().unwrap().to_string()
    };
    let mut served = BTreeSet::new();
    for piece in source.split(".route(").skip(1) {
        let call: String = piece.chars().take_while(|&c| c != ';').collect();
        let call = &call[..call.find(".route(").unwrap_or(call.len())];
        let name = call
            .trim_start()
            .strip_prefix("routes::")
            .unwrap_or_else(|| panic!("a route path that is not a routes.rs constant: {call}"));
        let name: String = name
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let path = value_of(&name);
        for method in ["get", "post", "put", "delete", "patch", "any"] {
            if call.contains(&format!("{method}(")) {
                served.insert((path.clone(), method.to_string()));
            }
        }
    }
    served
}

#[test]
fn every_served_route_is_documented_and_every_documented_route_is_served() {
    let doc = document();
    let documented = operations(&doc);
    let served = served_routes();
    assert!(served.len() >= 9, "{served:?}");
    // A route served with `any(..)` (the MCP transport) answers every method itself; it is covered
    // when the document has at least one operation on its path.
    let undocumented: Vec<_> = served
        .iter()
        .filter(|(path, method)| match method.as_str() {
            "any" => !documented.iter().any(|(p, _)| p == path),
            _ => !documented.contains(&(path.clone(), method.clone())),
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "served but not in /openapi.json: {undocumented:?}"
    );
    for route in routes::ALL {
        assert!(
            doc["paths"][route].is_object(),
            "{route} missing from /openapi.json"
        );
        assert!(
            served.iter().any(|(p, _)| p == route),
            "{route} is in routes::ALL but the router does not serve it"
        );
    }

    // And the server answers each documented operation (not the "no such route" fallback), here
    // while it is still loading: no models needed.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        http::start(listener, ServerConfig::default()).unwrap()
    });
    for (path, method) in &documented {
        let url = format!("http://{}{}", server.addr, path.replace("{id}", "s-1"));
        let r = ureq::request(&method.to_uppercase(), &url)
            .set("Content-Type", "application/json")
            .send_string("{}");
        let (status, body) = match r {
            Ok(resp) => (resp.status(), resp.into_string().unwrap()),
            Err(ureq::Error::Status(s, resp)) => (s, resp.into_string().unwrap()),
            Err(e) => panic!("{method} {path}: {e}"),
        };
        assert!(
            status != 405 && !body.contains("no such route"),
            "{method} {path} is documented but not served: {status} {body}"
        );
    }
    rt.block_on(server.shutdown());
}

/// JSON pointer escaping of one key.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Every `example` in the document with the schema it illustrates, as a JSON pointer to the schema.
fn examples(node: &Value, pointer: &str, found: &mut Vec<(String, Value)>) {
    match node {
        Value::Object(map) => {
            if let Some(example) = map.get("example") {
                if map.contains_key("schema") {
                    // A media type object: the example illustrates its `schema`.
                    found.push((format!("{pointer}/schema"), example.clone()));
                } else if pointer.contains("/components/schemas/") || pointer.ends_with("/schema") {
                    found.push((pointer.to_string(), example.clone()));
                }
            }
            if let Some(Value::Object(named)) = map.get("examples") {
                if map.contains_key("schema") {
                    for e in named.values() {
                        found.push((format!("{pointer}/schema"), e["value"].clone()));
                    }
                }
            }
            for (k, v) in map {
                if k != "example" && k != "examples" {
                    examples(v, &format!("{pointer}/{}", escape(k)), found);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                examples(v, &format!("{pointer}/{i}"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn every_documented_example_validates_against_its_schema() {
    let doc = document();
    let mut found = Vec::new();
    examples(&doc, "", &mut found);
    // The wire types carry examples for the answer, the question, sessions, errors and health.
    for schema in [
        "QueryRequest",
        "QueryResponse",
        "SessionHistory",
        "ErrorBody",
        "Health",
    ] {
        assert!(
            found
                .iter()
                .any(|(p, _)| p == &format!("/components/schemas/{schema}")),
            "{schema} has no example"
        );
    }
    let mut failures = Vec::new();
    for (pointer, example) in &found {
        // The whole document is the root resource, so that `#/components/...` references resolve.
        let mut root = doc.clone();
        root["$ref"] = json!(format!("#{pointer}"));
        let validator = jsonschema::validator_for(&root)
            .unwrap_or_else(|e| panic!("the schema at {pointer} does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(example)
            .map(|e| e.to_string())
            .collect();
        if !errors.is_empty() {
            failures.push(format!("{pointer}: {errors:?}"));
        }
    }
    assert!(found.len() >= 8, "{} examples", found.len());
    assert!(failures.is_empty(), "{failures:#?}");

    // The check can fail: a wrong example does not validate.
    let mut root = doc.clone();
    root["$ref"] = json!("#/components/schemas/QueryResponse");
    let validator = jsonschema::validator_for(&root).unwrap();
    assert!(!validator.is_valid(&json!({"query_id": 7})));
}
