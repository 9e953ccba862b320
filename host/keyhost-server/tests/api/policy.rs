//! Policies and identities: what an identity may do, the policy and identity routes
//! of both eras, and authorization of v0.16's routes without a name.

use super::*;

#[tokio::test]
async fn policies_decide_what_an_identity_may_do() {
    let s = start(|_| {}).await;
    let (admin, app) = (s.admin(), s.app());
    s.call(&admin, "POST", "/v1/key/create/app-key", None).await;
    s.call(&admin, "POST", "/v1/key/create/app-secret", None).await;

    let (status, body) = s.call(&app, "POST", "/v1/key/create/app-new", None).await;
    assert_eq!(
        (status, message(&body).as_str()),
        (403, "not authorized: insufficient permissions")
    );
    assert_eq!(s.call(&app, "POST", "/v1/key/generate/app-key", None).await.0, 200);
    assert_eq!(s.call(&app, "GET", "/v1/key/describe/app-key", None).await.0, 200);
    assert_eq!(
        s.call(&app, "GET", "/v1/key/describe/app-secret", None).await.0,
        403,
        "deny wins"
    );
    // Denied before existence is checked.
    assert_eq!(s.call(&app, "DELETE", "/v1/key/delete/missing", None).await.0, 403);
    assert_eq!(s.call(&app, "GET", "/v1/status", None).await.0, 403);

    let (status, body) = s.call(&app, "GET", "/v1/identity/self/describe", None).await;
    assert_eq!(status, 200);
    let me: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(me["identity"], s.app.identity().as_str());
    assert_eq!(me["policy"], "app");
    assert!(me["allow"].get("/v1/key/generate/app-*").is_some());

    let (status, body) = s.call(&admin, "GET", "/v1/policy/read/app", None).await;
    assert_eq!(status, 200);
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["deny"]
            .get("/v1/key/describe/app-secret")
            .is_some()
    );
    let (_, body) = s.call(&admin, "GET", "/v1/identity/list", None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["identities"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (status, _) = s
        .call(
            &admin,
            "GET",
            &format!("/v1/identity/describe/{}", s.app.identity()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let stranger = Identity::parse(&"c".repeat(64)).unwrap();
    let (status, _) = s
        .call(&admin, "GET", &format!("/v1/identity/describe/{stranger}"), None)
        .await;
    assert_eq!(status, 404);
}

/// KES v0.16's policy and identity routes, as its `kes policy add` and
/// `kes identity assign|forget` use them.
#[tokio::test]
async fn v016_clients_change_policies_and_assignments() {
    let s = start(|state| state.era = keyhost_server::Era::V016).await;
    let (admin, app) = (s.admin(), s.app());
    let app_id = s.app.identity();
    s.call(&admin, "POST", "/v1/key/create/shared", None).await;
    let (status, body) = s.call(&app, "POST", "/v1/key/generate/shared", Some(json!({}))).await;
    assert_eq!((status, message(&body).as_str()), (403, "prohibited by policy"));

    let written = json!({"allow": ["/v1/key/generate/*"], "deny": []});
    assert_eq!(
        s.call(&admin, "POST", "/v1/policy/write/gen", Some(written)).await.0,
        200
    );
    let (status, body) = s.call(&admin, "GET", "/v1/policy/read/gen", None).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (200, json!({"allow": ["/v1/key/generate/*"], "deny": []}))
    );
    let (_, body) = s.call(&admin, "GET", "/v1/policy/list/*", None).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!(["app", "gen"]));

    assert_eq!(
        s.call(&admin, "POST", &format!("/v1/identity/assign/gen/{app_id}"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        s.call(&app, "POST", "/v1/key/generate/shared", Some(json!({}))).await.0,
        200
    );
    let resp = admin.get(format!("{}/v1/identity/list/*", s.url)).send().await.unwrap();
    assert_eq!(
        resp.text().await.unwrap(),
        format!("{{\"identity\":\"{app_id}\",\"policy\":\"gen\"}}\n")
    );

    let admin_id = s.creds.admin.identity();
    let (status, body) = s
        .call(&admin, "POST", &format!("/v1/identity/assign/gen/{admin_id}"), None)
        .await;
    // KES v0.16's order: the admin is refused as the admin first.
    assert_eq!((status, message(&body).as_str()), (400, "identity is root"));
    let (status, body) = s
        .call(&admin, "DELETE", &format!("/v1/identity/forget/{admin_id}"), None)
        .await;
    assert_eq!((status, message(&body).as_str()), (400, "identity is root"));
    let (status, _) = s
        .call(&admin, "POST", &format!("/v1/identity/assign/nope/{app_id}"), None)
        .await;
    assert_eq!(status, 404);

    assert_eq!(
        s.call(&admin, "DELETE", &format!("/v1/identity/forget/{app_id}"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        s.call(&app, "POST", "/v1/key/generate/shared", Some(json!({}))).await.0,
        403
    );
    assert_eq!(s.call(&admin, "DELETE", "/v1/policy/delete/gen", None).await.0, 200);
    assert_eq!(s.call(&admin, "GET", "/v1/policy/read/gen", None).await.0, 404);
    let (status, _) = s
        .call(&admin, "POST", "/v1/policy/write/bad", Some(json!({"allow": ["[a-"]})))
        .await;
    assert_eq!(status, 400, "malformed globs are refused");
}

/// The newest shapes of the policy and identity routes, and listing patterns.
#[tokio::test]
async fn policy_and_identity_shapes() {
    let s = start(|_| {}).await;
    let admin = s.admin();
    let admin_id = s.creds.admin.identity();
    let (status, body) = s.call(&admin, "GET", "/v1/policy/describe/app", None).await;
    assert_eq!(status, 200, "{body}");
    let d: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (d["name"].as_str(), d["created_by"].as_str()),
        (Some("app"), Some(admin_id.as_str()))
    );
    assert!(d["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(d.get("allow").is_none(), "describe has no rules: {body}");
    let (status, body) = s.call(&admin, "GET", "/v1/policy/describe/nope", None).await;
    assert_eq!((status, message(&body).as_str()), (404, "policy does not exist"));
    let (_, body) = s.call(&admin, "GET", "/v1/policy/list/a*", None).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["names"], json!(["app"]));
    let (_, body) = s.call(&admin, "GET", "/v1/policy/list/x", None).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["names"], json!([]));

    let (status, body) = s
        .call(&admin, "GET", &format!("/v1/identity/describe/{admin_id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["admin"], true);
    let (status, body) = s.call(&admin, "GET", "/v1/identity/self/describe", None).await;
    assert_eq!(status, 200);
    let me: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (me["identity"].as_str(), me["admin"].as_bool()),
        (Some(admin_id.as_str()), Some(true))
    );
    let (status, body) = s.call(&admin, "GET", "/v1/identity/describe/not-hex", None).await;
    assert_eq!((status, message(&body).as_str()), (404, "identity does not exist"));

    // Listing patterns: `*` only at the end.
    let (status, body) = s.call(&admin, "GET", "/v1/key/list/a*b", None).await;
    assert_eq!(status, 400, "{body}");
}

/// A v0.16 path whose last element is empty acts, as in KES v0.16, on the key named
/// after the route (`DELETE /v1/key/delete/` deletes the key `delete`). The policy
/// is asked about that key's path, so a deny of it holds: the attack is a request
/// that a `*` allow matches while the deny names the key it reaches.
#[tokio::test]
async fn a_v016_route_without_a_name_is_authorized_as_the_key_it_acts_on() {
    let s = start(|state| state.era = keyhost_server::Era::V016).await;
    let (admin, app) = (s.admin(), s.app());
    let app_id = s.app.identity();
    assert_eq!(s.call(&admin, "POST", "/v1/key/create/delete", None).await.0, 200);
    let written = json!({"allow": ["/v1/key/delete/*"], "deny": ["/v1/key/delete/delete"]});
    assert_eq!(s.call(&admin, "POST", "/v1/policy/write/p", Some(written)).await.0, 200);
    assert_eq!(
        s.call(&admin, "POST", &format!("/v1/identity/assign/p/{app_id}"), None)
            .await
            .0,
        200
    );
    let (status, body) = s.call(&app, "DELETE", "/v1/key/delete/", None).await;
    assert_eq!((status, message(&body).as_str()), (403, "prohibited by policy"));
    let (status, _) = s.call(&admin, "POST", "/v1/key/generate/delete", Some(json!({}))).await;
    assert_eq!(status, 200, "the key is still there");
    // The admin may: the key named after the route is deleted, as by KES v0.16.
    assert_eq!(s.call(&admin, "DELETE", "/v1/key/delete/", None).await.0, 200);
    let (status, _) = s.call(&admin, "POST", "/v1/key/generate/delete", Some(json!({}))).await;
    assert_eq!(status, 404);
}
