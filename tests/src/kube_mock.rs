//! A strict Kubernetes API server mock (tower-test) answering with the real Kubernetes 1.28
//! payloads in `tests/fixtures/kube/` (recorded from a real kube-apiserver v1.28.7).
//!
//! Two shapes: [`ApiServerVerifier`] walks an exact list of expected requests in order (method,
//! path, query, content type and body); [`RoutingApiServer`] serves bootstrap-token Secrets and
//! cluster-info in any order, checks every Secret body strictly, and records any other call as a
//! failure.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{json, Value};

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

pub fn fixtures_dir() -> String {
    format!("{}/fixtures/kube", env!("CARGO_MANIFEST_DIR"))
}

/// One captured request/response pair.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub request_body: Value,
    pub status: u16,
    pub response_body: Value,
}

pub fn fixture(name: &str) -> Fixture {
    let text = std::fs::read_to_string(format!("{}/{name}", fixtures_dir())).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    Fixture {
        method: v["request"]["method"].as_str().unwrap().into(),
        path: v["request"]["path"].as_str().unwrap().into(),
        query: v["request"]["query"].as_str().unwrap().into(),
        content_type: v["request"]["content_type"].as_str().map(str::to_string),
        request_body: v["request"]["body"].clone(),
        status: v["response"]["status"].as_u64().unwrap() as u16,
        response_body: v["response"]["body"].clone(),
    }
}

pub fn mock_client() -> (kube::Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(svc, "default"), handle)
}

fn respond(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// What a request looked like, body parsed.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Value,
}

async fn read(req: Request<Body>) -> Seen {
    let (parts, body) = req.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        content_type: parts.headers.get("content-type").map(|v| v.to_str().unwrap().to_string()),
        body: if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        },
    }
}

/// Checks a request body; an error describes the mismatch.
pub type BodyCheck = Box<dyn Fn(&Value) -> Result<(), String> + Send>;

/// One expected request and the answer to give.
pub struct Expect {
    pub method: &'static str,
    pub path: String,
    pub query: &'static str,
    /// Checks the request body; returns an error description on mismatch.
    pub check_body: BodyCheck,
    pub content_type: Option<&'static str>,
    pub status: u16,
    pub response: Value,
}

impl Expect {
    pub fn new(method: &'static str, path: impl Into<String>, query: &'static str, status: u16, response: Value) -> Self {
        Self {
            method,
            path: path.into(),
            query,
            check_body: Box::new(|b| if b.is_null() { Ok(()) } else { Err(format!("unexpected body {b}")) }),
            content_type: None,
            status,
            response,
        }
    }
    /// Expects exactly this JSON body, sent as `content_type`.
    pub fn exact_body(mut self, content_type: &'static str, want: Value) -> Self {
        self.content_type = Some(content_type);
        self.check_body = Box::new(move |b| {
            if *b == want {
                Ok(())
            } else {
                Err(format!("body {b}\n  expected {want}"))
            }
        });
        self
    }
    pub fn body(mut self, check: impl Fn(&Value) -> Result<(), String> + Send + 'static) -> Self {
        self.check_body = Box::new(check);
        self
    }
}

/// Walks the expected requests in order; anything else is a failure.
pub struct ApiServerVerifier {
    failures: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
    expected: usize,
}

impl ApiServerVerifier {
    pub fn run(mut handle: Handle, expected: Vec<Expect>) -> Self {
        let failures = Arc::new(Mutex::new(vec![]));
        let seen = Arc::new(Mutex::new(vec![]));
        let n = expected.len();
        let (f, s) = (failures.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let mut expected = expected.into_iter();
            while let Some((req, send)) = handle.next_request().await {
                let got = read(req).await;
                s.lock().unwrap().push(got.clone());
                match expected.next() {
                    None => {
                        f.lock()
                            .unwrap()
                            .push(format!("unexpected call {} {}?{}", got.method, got.path, got.query));
                        send.send_response(respond(500, &json!({"kind": "Status", "code": 500, "message": "unexpected call"})));
                    }
                    Some(e) => {
                        let mut errs = vec![];
                        if got.method != e.method || got.path != e.path || got.query != e.query {
                            errs.push(format!(
                                "expected {} {}?{}, got {} {}?{}",
                                e.method, e.path, e.query, got.method, got.path, got.query
                            ));
                        }
                        if e.content_type.is_some() && got.content_type.as_deref() != e.content_type {
                            errs.push(format!(
                                "{} {}: content type {:?}, expected {:?}",
                                got.method, got.path, got.content_type, e.content_type
                            ));
                        }
                        if let Err(why) = (e.check_body)(&got.body) {
                            errs.push(format!("{} {}: {why}", got.method, got.path));
                        }
                        f.lock().unwrap().extend(errs);
                        send.send_response(respond(e.status, &e.response));
                    }
                }
            }
        });
        Self {
            failures,
            seen,
            task,
            expected: n,
        }
    }

    /// Asserts every expected request came (waiting up to `timeout`) and nothing else did.
    pub async fn finish(self, timeout: Duration) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ticker = tokio::time::interval(Duration::from_millis(5));
        while self.seen.lock().unwrap().len() < self.expected && tokio::time::Instant::now() < deadline {
            ticker.tick().await;
        }
        self.task.abort();
        let seen = self.seen.lock().unwrap().clone();
        let failures = self.failures.lock().unwrap().clone();
        assert!(failures.is_empty(), "API server mock: {failures:#?}");
        assert_eq!(seen.len(), self.expected, "expected {} calls, saw {:#?}", self.expected, seen);
        seen
    }
}

/// Checks a bootstrap-token Secret body strictly against kubeadm's format and the fixture.
pub fn check_bootstrap_secret(body: &Value, provider_id: Option<&str>) -> Result<String, String> {
    let fx = fixture("06-create-bootstrap-token.json").request_body;
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    if body["apiVersion"] != "v1" || body["kind"] != "Secret" {
        return Err(format!("not a v1 Secret: {body}"));
    }
    if body["type"] != fx["type"] {
        return Err(format!("type {} is not {}", body["type"], fx["type"]));
    }
    if keys(&body["data"]) != keys(&fx["data"]) {
        return Err(format!(
            "data keys {:?} differ from kubeadm's {:?}",
            keys(&body["data"]),
            keys(&fx["data"])
        ));
    }
    let mut extra = keys(body);
    extra.retain(|k| !["apiVersion", "kind", "metadata", "type", "data"].contains(&k.as_str()));
    if !extra.is_empty() {
        return Err(format!("unexpected fields {extra:?}"));
    }
    let data: BTreeMap<String, String> = body["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(v.as_str().unwrap_or(""))
                        .unwrap_or_default(),
                )
                .unwrap_or_default(),
            )
        })
        .collect();
    let id = &data["token-id"];
    let secret = &data["token-secret"];
    let az09 = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !az09(id, 6) || !az09(secret, 16) {
        return Err("token-id must be [a-z0-9]{6} and token-secret [a-z0-9]{16}".into());
    }
    if body["metadata"] != json!({"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"}) {
        return Err(format!(
            "metadata {} does not name bootstrap-token-{id} in kube-system",
            body["metadata"]
        ));
    }
    for k in ["usage-bootstrap-authentication", "usage-bootstrap-signing"] {
        if data[k] != "true" {
            return Err(format!("{k} is {}", data[k]));
        }
    }
    if data["auth-extra-groups"] != worldland_core::cluster::bootstrap::TOKEN_EXTRA_GROUPS {
        return Err(format!("auth-extra-groups is {}", data["auth-extra-groups"]));
    }
    let exp = chrono::DateTime::parse_from_rfc3339(&data["expiration"]).map_err(|e| format!("expiration: {e}"))?;
    if exp.with_timezone(&chrono::Utc) <= chrono::Utc::now() {
        return Err("expiration is not in the future".into());
    }
    if let Some(p) = provider_id {
        if !data["description"].contains(p) {
            return Err(format!("description {:?} does not name provider {p}", data["description"]));
        }
    }
    Ok(id.clone())
}

/// Serves bootstrap-token Secrets and cluster-info, in any order.
#[derive(Clone, Default)]
pub struct RoutingApiServer {
    pub secrets: Arc<Mutex<BTreeMap<String, Value>>>,
    pub failures: Arc<Mutex<Vec<String>>>,
    pub calls: Arc<Mutex<Vec<String>>>,
    /// Answer this many Secret creates with 500 first (a flaky API server).
    pub fail_creates: Arc<Mutex<u32>>,
    /// Nodes by name, as the API server would return them.
    pub nodes: Arc<Mutex<BTreeMap<String, Value>>>,
    /// Counts requests served, so tests can await the server's state instead of sleeping.
    pub served: Arc<tokio::sync::watch::Sender<u64>>,
}

/// RFC 7386 JSON merge patch: what the API server does with `application/merge-patch+json`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

pub const SECRETS_PATH: &str = "/api/v1/namespaces/kube-system/secrets";
pub const CLUSTER_INFO_PATH: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";
pub const LEASES_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";

impl RoutingApiServer {
    /// A node joins: the fixture node (Ready, 32 CPU, 128 GiB, 4 GPUs) under `name`.
    pub fn add_fixture_node(&self, name: &str) {
        let mut node = fixture("15-get-node.json").response_body;
        node["metadata"]["name"] = json!(name);
        node["metadata"]["labels"] = json!({"kubernetes.io/hostname": name});
        self.nodes.lock().unwrap().insert(name.to_string(), node);
    }

    pub fn node(&self, name: &str) -> Option<Value> {
        self.nodes.lock().unwrap().get(name).cloned()
    }

    /// Waits (bounded) until the node satisfies `check`, re-checking after every request served.
    pub async fn wait_for_node(&self, name: &str, timeout: Duration, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let mut rx = self.served.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                rx.borrow_and_update();
                if let Some(n) = self.node(name).filter(|n| check(n)) {
                    return n;
                }
                if rx.changed().await.is_err() {
                    return Value::Null;
                }
            }
        })
        .await;
        waited.unwrap_or_else(|_| panic!("timed out after {timeout:?} waiting for node {name}: {what}"))
    }

    pub fn spawn(&self, mut handle: Handle) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let got = read(req).await;
                me.calls.lock().unwrap().push(format!("{} {}", got.method, got.path));
                send.send_response(me.answer(&got));
                me.served.send_modify(|n| *n += 1);
            }
        })
    }

    fn fail(&self, why: String) -> Response<Body> {
        self.failures.lock().unwrap().push(why);
        respond(
            500,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "mock refused", "code": 500}),
        )
    }

    fn answer(&self, got: &Seen) -> Response<Body> {
        let name_in = |path: &str| path.strip_prefix(&format!("{SECRETS_PATH}/")).map(str::to_string);
        match (got.method.as_str(), got.path.as_str()) {
            ("GET", CLUSTER_INFO_PATH) if got.query.is_empty() => {
                let fx = fixture("05-get-cluster-info.json");
                respond(fx.status, &fx.response_body)
            }
            ("POST", SECRETS_PATH) => {
                if got.query != "&fieldManager=worldland" || got.content_type.as_deref() != Some("application/json") {
                    return self.fail(format!(
                        "POST secrets with query {:?} and content type {:?}",
                        got.query, got.content_type
                    ));
                }
                if let Err(why) = check_bootstrap_secret(&got.body, None) {
                    return self.fail(why);
                }
                {
                    let mut flaky = self.fail_creates.lock().unwrap();
                    if *flaky > 0 {
                        *flaky -= 1;
                        return respond(
                            500,
                            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500}),
                        );
                    }
                }
                let name = got.body["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let mut secrets = self.secrets.lock().unwrap();
                if secrets.contains_key(&name) {
                    let mut body = fixture("07-create-bootstrap-token-again.json").response_body;
                    body["message"] = json!(format!("secrets \"{name}\" already exists"));
                    body["details"]["name"] = json!(name);
                    return respond(409, &body);
                }
                let mut created = fixture("06-create-bootstrap-token.json").response_body;
                created["metadata"]["name"] = json!(name);
                created["data"] = got.body["data"].clone();
                secrets.insert(name, created.clone());
                respond(201, &created)
            }
            ("GET", p) if name_in(p).is_some() => match self.secrets.lock().unwrap().get(&name_in(p).unwrap()) {
                Some(s) => respond(200, s),
                None => {
                    let name = name_in(p).unwrap();
                    respond(
                        404,
                        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("secrets \"{name}\" not found"), "reason": "NotFound", "details": {"name": name, "kind": "secrets"}, "code": 404}),
                    )
                }
            },
            ("DELETE", p) if name_in(p).is_some() => {
                let name = name_in(p).unwrap();
                match self.secrets.lock().unwrap().remove(&name) {
                    Some(_) => {
                        let mut body = fixture("11-delete-bootstrap-token.json").response_body;
                        body["details"]["name"] = json!(name);
                        respond(200, &body)
                    }
                    None => {
                        let mut body = fixture("12-delete-bootstrap-token-again.json").response_body;
                        body["details"]["name"] = json!(name);
                        respond(404, &body)
                    }
                }
            }
            ("GET", p) if p.starts_with("/api/v1/nodes/") && got.query.is_empty() => {
                let name = &p["/api/v1/nodes/".len()..];
                match self.nodes.lock().unwrap().get(name) {
                    Some(n) => respond(200, n),
                    None => {
                        let mut body = fixture("22-get-node-not-found.json").response_body;
                        body["message"] = json!(format!("nodes \"{name}\" not found"));
                        body["details"]["name"] = json!(name);
                        respond(404, &body)
                    }
                }
            }
            ("PATCH", p) if p.starts_with("/api/v1/nodes/") => {
                if got.query != "&fieldManager=worldland" || got.content_type.as_deref() != Some("application/merge-patch+json") {
                    return self.fail(format!(
                        "PATCH node with query {:?} and content type {:?}",
                        got.query, got.content_type
                    ));
                }
                let name = &p["/api/v1/nodes/".len()..];
                let mut nodes = self.nodes.lock().unwrap();
                let Some(node) = nodes.get_mut(name) else {
                    return self.fail(format!("PATCH of unknown node {name}"));
                };
                let current = node["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
                if let Some(rv) = got.body["metadata"]["resourceVersion"].as_str() {
                    if rv != current {
                        return respond(409, &fixture("26-patch-node-stale-resource-version.json").response_body);
                    }
                }
                merge_patch(node, &got.body);
                node["metadata"]["resourceVersion"] = json!((current.parse::<u64>().unwrap_or(0) + 1).to_string());
                respond(200, node)
            }
            ("GET", "/api/v1/nodes") => self.list_provider_nodes(got),
            ("GET", p) if p.starts_with(&format!("{LEASES_PATH}/")) && got.query.is_empty() => {
                // No kubelet runs here: no node has a Lease.
                let name = &p[LEASES_PATH.len() + 1..];
                let mut body = fixture("40-get-lease-not-found.json").response_body;
                body["message"] = json!(format!("leases.coordination.k8s.io \"{name}\" not found"));
                body["details"]["name"] = json!(name);
                respond(404, &body)
            }
            _ => self.fail(format!("unexpected call {} {}?{}", got.method, got.path, got.query)),
        }
    }

    /// The node-health pass's list: every node carrying a provider id and not marked offline, on
    /// one page (the list shaped as `41-list-nodes-provider-id.json`).
    fn list_provider_nodes(&self, got: &Seen) -> Response<Body> {
        if got.query != "&labelSelector=worldland.io%2Fprovider-id%2Cworldland.io%2Fstatus%21%3Doffline&limit=100" {
            return self.fail(format!("GET nodes with query {:?}", got.query));
        }
        let mut list = fixture("41-list-nodes-provider-id.json").response_body;
        let nodes = self.nodes.lock().unwrap();
        let items: Vec<Value> = nodes
            .values()
            .filter(|n| n["metadata"]["labels"].get("worldland.io/provider-id").is_some())
            .filter(|n| n["metadata"]["labels"].get("worldland.io/status").and_then(Value::as_str) != Some("offline"))
            .cloned()
            .map(|mut n| {
                let o = n.as_object_mut().unwrap();
                o.remove("kind");
                o.remove("apiVersion");
                n
            })
            .collect();
        list["items"] = json!(items);
        respond(200, &list)
    }

    pub fn token_count(&self) -> usize {
        self.secrets.lock().unwrap().len()
    }

    pub fn assert_no_failures(&self) {
        let f = self.failures.lock().unwrap();
        assert!(f.is_empty(), "API server mock: {f:#?}");
    }
}
