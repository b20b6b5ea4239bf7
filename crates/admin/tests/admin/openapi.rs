//! The OpenAPI document against the router's route table: every route is
//! documented with its method, protected routes say they need the token, every
//! schema reference resolves, and every route answers on its method.

use std::collections::BTreeSet;

use http::Method;
use obleth_admin::openapi::{document, SECURITY_SCHEME};
use obleth_admin::{routes, Access};
use serde_json::Value;

use crate::support::*;

/// `(METHOD, path)` of every operation in `doc`.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in [
            "get", "post", "put", "patch", "delete", "head", "options", "trace",
        ] {
            if item.get(method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().unwrap_or_default().to_owned());
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn the_router_and_the_openapi_document_list_the_same_routes() {
    let doc = serde_json::to_value(document()).unwrap();
    let table: BTreeSet<(String, String)> = routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    assert_eq!(table.len(), routes().len(), "a route is listed twice");
    let documented = documented(&doc);
    let undocumented: Vec<_> = table.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&table).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes without documentation: {undocumented:?}; documented but not routed: {unrouted:?}"
    );

    for route in routes() {
        let op = &doc["paths"][route.path][route.method.as_str().to_lowercase()];
        let secured = op["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get(SECURITY_SCHEME).is_some()));
        assert_eq!(secured, route.access == Access::Token, "{route:?}: {op}");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{route:?}"
        );
    }

    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in found {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r}"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "unresolved reference {r}"
        );
    }
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
}

#[tokio::test]
async fn every_route_in_the_table_answers_on_its_method_and_the_document_is_served() {
    let (admin, _db, _pool) = TestAdmin::on_fresh_database().await;
    for route in routes() {
        let path = route
            .path
            .replace("{id}", "6f1c1b8e-3f0e-4d7a-9a51-8d6c2b1e0f11")
            .replace("{name}", "nope");
        let a = admin
            .call(route.method.clone(), &path, serde_json::json!({}))
            .await;
        // 404 is fine for a missing resource, but then with our error body.
        assert_ne!(a.status, 405, "{route:?}");
        if a.status == 404 {
            assert_eq!(a.admin_error().0, "not_found", "{route:?}");
            assert!(
                a.text().contains("`"),
                "{route:?} is not routed: {}",
                a.text()
            );
        }
    }
    let served = request(Method::GET, &admin.url("/api/v1/openapi.json"), &[], "").await;
    assert_eq!(served.status, 200);
    assert_eq!(served.json(), serde_json::to_value(document()).unwrap());
    let unknown = admin.get("/api/v1/nothing-here").await;
    assert_eq!(
        (unknown.status, unknown.admin_error().0.as_str()),
        (404, "not_found")
    );
    let wrong_method = admin
        .call(Method::DELETE, "/api/v1/fleet", serde_json::Value::Null)
        .await;
    assert_eq!(wrong_method.status, 405);
    admin.stop().await.unwrap();
}
