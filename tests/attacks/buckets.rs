//! F8: `DELETE /api/v2/buckets/{id}` names the bucket to any known token.
//!
//! To decide the deletion, the proxy looks the id up upstream with its own
//! credential (http.rs `delete_bucket`) once the token is merely known,
//! then refuses a token without DELETE with "token does not have delete
//! permission on database \"<name>\"": a read-only database token learns
//! the name of any bucket whose id it has, and whether an id exists (the
//! upstream's 404 is passed through).

use crate::common::capture::Canned;
use crate::common::proxy::{request, send};

use super::support::Env;

#[tokio::test]
async fn a_refused_bucket_deletion_does_not_reveal_the_bucket() {
    let env = Env::start(None).await;
    env.upstream.set_response(Canned {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: bytes::Bytes::from_static(
            br#"{"id":"0123456789abcdef","orgID":"fedcba9876543210","name":"payroll-2026"}"#,
        ),
    });
    let auth = format!("Token {}", env.x);
    let reply = send(request(
        "DELETE",
        &env.proxy.url("/api/v2/buckets/0123456789abcdef"),
        &[("authorization", auth.as_str())],
        "",
    ))
    .await;
    let body = String::from_utf8_lossy(&reply.body);
    assert_eq!(reply.status, 403, "{body}");
    assert!(
        !body.contains("payroll-2026"),
        "a token that administers nothing learned the bucket's name: {body}"
    );
}
