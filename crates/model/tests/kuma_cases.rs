//! Cases ported from Kuma's validator tests: the same inputs must give the
//! same verdict, at the same fields, with Kuma's wording.

use kuma_model::resource::ResourceInput;
use kuma_model::specs::{self, Context};

/// Validates a whole resource given as YAML; returns `(field, reason)` pairs.
fn violations(yaml: &str) -> Vec<(String, String)> {
    let value: serde_json::Value = serde_yaml::from_str(yaml).expect("test YAML");
    let input = match ResourceInput::from_kuma_json(value, None) {
        Ok(i) => i,
        Err(v) => {
            return v
                .into_vec()
                .into_iter()
                .map(|v| (v.field, v.reason))
                .collect();
        }
    };
    let ctx = Context {
        kind: input.kind,
        mesh: input.mesh.as_deref(),
        name: input.name.as_deref().unwrap_or(""),
        labels: &input.labels,
    };
    match specs::validate(&ctx, &input.spec) {
        Ok(_) => vec![],
        Err(v) => v
            .into_vec()
            .into_iter()
            .map(|v| (v.field, v.reason))
            .collect(),
    }
}

fn policy(kind: &str, spec: &str) -> String {
    let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!("type: {kind}\nname: p\nmesh: default\nspec:\n{indented}")
}

#[track_caller]
fn expect(yaml: &str, expected: &[(&str, &str)]) {
    let got = violations(yaml);
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|(f, r)| (f.to_string(), r.to_string()))
        .collect();
    assert_eq!(got, want, "input:\n{yaml}");
}

#[track_caller]
fn valid(yaml: &str) {
    expect(yaml, &[]);
}

// --- MeshTimeout (pkg/plugins/policies/meshtimeout/api/v1alpha1/validator_test.go)

#[test]
fn meshtimeout_needs_to_or_rules() {
    expect(
        &policy("MeshTimeout", "targetRef:\n  kind: Mesh"),
        &[("spec", "at least one of 'to' or 'rules' has to be defined")],
    );
}

#[test]
fn meshtimeout_unsupported_to_kind() {
    expect(
        &policy(
            "MeshTimeout",
            "targetRef:\n  kind: Mesh\nto:\n  - targetRef:\n      kind: MeshServiceSubset\n    default:\n      http:\n        requestTimeout: 1s",
        ),
        &[(
            "spec.to[0].targetRef.kind",
            "value 'MeshServiceSubset' is not supported",
        )],
    );
}

#[test]
fn meshtimeout_negative_and_zero_timeouts() {
    expect(
        &policy(
            "MeshTimeout",
            "targetRef:\n  kind: Mesh\nto:\n  - targetRef:\n      kind: MeshService\n      labels:\n        kuma.io/display-name: web-backend\n    default:\n      connectionTimeout: -1s\n      http:\n        requestTimeout: -10s",
        ),
        &[
            (
                "spec.to[0].default.connectionTimeout",
                "must be greater than zero when defined",
            ),
            (
                "spec.to[0].default.http.requestTimeout",
                "must not be negative when defined",
            ),
        ],
    );
}

#[test]
fn meshtimeout_empty_sections() {
    expect(
        &policy(
            "MeshTimeout",
            "to:\n  - targetRef:\n      kind: MeshService\n      labels:\n        kuma.io/display-name: web\n    default:\n      http: {}",
        ),
        &[(
            "spec.to[0].default.http",
            "at least one timeout in this section should be configured",
        )],
    );
    expect(
        &policy(
            "MeshTimeout",
            "to:\n  - targetRef:\n      kind: MeshService\n      labels:\n        kuma.io/display-name: web",
        ),
        &[(
            "spec.to[0].default",
            "at least one timeout should be configured",
        )],
    );
}

#[test]
fn meshtimeout_route_section_name() {
    expect(
        &policy(
            "MeshTimeout",
            "to:\n  - targetRef:\n      kind: MeshHTTPRoute\n      labels:\n        kuma.io/display-name: http-route-1\n      sectionName: some-section\n    default:\n      http:\n        requestTimeout: 1s",
        ),
        &[(
            "spec.to[0].targetRef.sectionName",
            "must not be set with kind MeshHTTPRoute",
        )],
    );
}

#[test]
fn meshtimeout_inbound_rules_with_section_name_are_valid() {
    valid(&policy(
        "MeshTimeout",
        "targetRef:\n  kind: Dataplane\n  labels:\n    app: web\n  sectionName: http\nrules:\n  - default:\n      idleTimeout: 20s\n      http:\n        requestTimeout: 2s",
    ));
}

#[test]
fn meshtimeout_keeps_duration_strings() {
    let yaml = policy(
        "MeshTimeout",
        "to:\n  - targetRef:\n      kind: Mesh\n    default:\n      idleTimeout: 1m30s\n      http:\n        requestTimeout: 500ms",
    );
    let value: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    let input = ResourceInput::from_kuma_json(value, None).unwrap();
    let labels = Default::default();
    let ctx = Context {
        kind: input.kind,
        mesh: Some("default"),
        name: "p",
        labels: &labels,
    };
    let out = specs::validate(&ctx, &input.spec).unwrap();
    assert_eq!(out["to"][0]["default"]["idleTimeout"], "1m30s");
    assert_eq!(out["to"][0]["default"]["http"]["requestTimeout"], "500ms");
    let typed: specs::MeshTimeout = serde_json::from_value(out).unwrap();
    let idle = typed.to.unwrap()[0].default.idle_timeout.clone().unwrap();
    assert_eq!(idle.as_std(), Some(std::time::Duration::from_secs(90)));
}

// --- Dataplane (pkg/core/resources/apis/mesh/dataplane_validator_test.go)

fn dataplane(networking: &str) -> String {
    let indented: String = networking.lines().map(|l| format!("  {l}\n")).collect();
    format!("type: Dataplane\nname: dp-1\nmesh: default\nnetworking:\n{indented}")
}

#[test]
fn dataplane_valid_examples() {
    valid(&dataplane(
        "address: 192.168.0.1\ninbound:\n  - port: 8080\n    servicePort: 7777\n    address: 127.0.0.1\noutbound:\n  - port: 3333\n    address: 127.0.0.1\n    backendRef:\n      kind: MeshService\n      name: redis\n      port: 6379",
    ));
    valid(&dataplane(
        "address: fd00::1\ninbound:\n  - port: 8080\n    servicePort: 7777\n    address: ::1",
    ));
    valid(&dataplane("address: example.com\ninbound:\n  - port: 8080"));
    // Admin on loopback does not clash with listeners on another interface.
    valid(&dataplane(
        "address: 192.168.0.1\nadmin:\n  port: 8080\ninbound:\n  - port: 8080\n    servicePort: 7777\n    address: 192.168.0.1\noutbound:\n  - port: 3333\n    address: 192.168.0.1\n    backendRef:\n      kind: MeshService\n      name: redis\n      port: 6379",
    ));
    valid(&dataplane(
        "address: 192.168.0.1\noutbound:\n  - port: 3333\n    backendRef:\n      kind: MeshExternalService\n      name: httpbin",
    ));
    valid(&dataplane(
        "address: 192.168.0.1\nlisteners:\n  - type: ZoneIngress\n    address: 192.168.0.1\n    port: 10001\n  - type: ZoneEgress\n    address: 192.168.0.1\n    port: 10002",
    ));
}

#[test]
fn dataplane_addresses() {
    expect(
        &dataplane("address: 0.0.0.0\ninbound:\n  - port: 80"),
        &[("networking.address", "must not be 0.0.0.0 or ::")],
    );
    expect(
        &dataplane("inbound:\n  - port: 80"),
        &[("networking.address", "address can't be empty")],
    );
    expect(
        &dataplane("address: '!@#'\ninbound:\n  - port: 80"),
        &[(
            "networking.address",
            "address has to be valid IP address or domain name",
        )],
    );
    expect(
        "type: Dataplane\nname: dp-1\nmesh: default\n",
        &[("networking", "must be defined")],
    );
}

#[test]
fn dataplane_ports() {
    expect(
        &dataplane(
            "address: 192.168.0.1\ninbound:\n  - port: 65536\n  - port: 0\noutbound:\n  - port: 0\n    backendRef:\n      kind: MeshService\n      name: a\n      port: 80",
        ),
        &[
            (
                "networking.inbound[0].port",
                "port must be in the range [1, 65535]",
            ),
            (
                "networking.inbound[1].port",
                "port must be in the range [1, 65535]",
            ),
            (
                "networking.outbound[0].port",
                "port must be in the range [1, 65535]",
            ),
        ],
    );
    expect(
        &dataplane("address: 192.168.0.1\ninbound:\n  - port: 80\n    servicePort: 65536"),
        &[(
            "networking.inbound[0].servicePort",
            "port must be in the range [1, 65535]",
        )],
    );
}

#[test]
fn dataplane_service_address() {
    expect(
        &dataplane("address: 192.168.0.1\ninbound:\n  - port: 80\n    serviceAddress: 192.168.0.1"),
        &[(
            "networking.inbound[0].serviceAddress",
            "serviceAddress and servicePort has to differ from address and port",
        )],
    );
    expect(
        &dataplane("address: 192.168.0.1\ninbound:\n  - port: 80\n    serviceAddress: foo"),
        &[(
            "networking.inbound[0].serviceAddress",
            "serviceAddress has to be valid IP address",
        )],
    );
    valid(&dataplane(
        "address: 192.168.0.1\ninbound:\n  - port: 80\n    address: 192.168.0.2\n    serviceAddress: 192.168.0.2\n    servicePort: 8080",
    ));
}

#[test]
fn dataplane_admin_port_clash() {
    expect(
        &dataplane(
            "address: 192.168.0.1\nadmin:\n  port: 8080\ninbound:\n  - port: 8080\n    servicePort: 7777\n    address: 127.0.0.1",
        ),
        &[("networking.admin.port", "must differ from inbound")],
    );
    expect(
        &dataplane(
            "address: 192.168.0.1\nadmin:\n  port: 3333\noutbound:\n  - port: 3333\n    backendRef:\n      kind: MeshService\n      name: redis\n      port: 6379",
        ),
        &[("networking.admin.port", "must differ from outbound")],
    );
}

#[test]
fn dataplane_backend_refs() {
    expect(
        &dataplane("address: 192.168.0.1\noutbound:\n  - port: 3333\n    backendRef: {}"),
        &[
            (
                "networking.outbound[0].backendRef.kind",
                "invalid value. Available values are: MeshExternalService,MeshMultiZoneService,MeshService",
            ),
            (
                "networking.outbound[0].backendRef",
                "either 'name' or 'labels' should be specified",
            ),
            (
                "networking.outbound[0].backendRef.port",
                "port must be in the range [1, 65535]",
            ),
        ],
    );
    expect(
        &dataplane("address: 192.168.0.1\noutbound:\n  - port: 3333"),
        &[("networking.outbound[0].backendRef", "must be defined")],
    );
}

#[test]
fn dataplane_gateway() {
    expect(
        &dataplane("address: 192.168.0.1\ngateway:\n  tags:\n    version: v1"),
        &[(
            "networking.gateway.tags",
            "mandatory tag \"kuma.io/service\" is missing",
        )],
    );
    expect(
        &dataplane(
            "address: 192.168.0.1\ngateway:\n  tags:\n    kuma.io/service: gw\n    version: ''",
        ),
        &[(
            "networking.gateway.tags[\"version\"]",
            "tag value must be non-empty",
        )],
    );
    expect(
        &dataplane(
            "address: 192.168.0.1\ngateway:\n  tags:\n    kuma.io/service: gw\n    kuma.io/protocol: http",
        ),
        &[(
            "networking.gateway.tags[\"kuma.io/protocol\"]",
            "other values than tcp are not allowed, provided value \"http\"",
        )],
    );
}

#[test]
fn dataplane_tagged_inbounds_need_service_tag() {
    expect(
        &dataplane("address: 192.168.0.1\ninbound:\n  - port: 80\n    tags:\n      version: v1"),
        &[(
            "networking.inbound[0].tags",
            "mandatory tag \"kuma.io/service\" is missing",
        )],
    );
    valid(&dataplane(
        "address: 192.168.0.1\ninbound:\n  - port: 80\n    tags:\n      kuma.io/service: web\n      version: v1",
    ));
}

#[test]
fn dataplane_service_probe() {
    expect(
        &dataplane(
            "address: 192.168.0.1\ninbound:\n  - port: 80\n    serviceProbe:\n      interval: 0s\n      unhealthyThreshold: 0",
        ),
        &[
            (
                "networking.inbound[0].serviceProbe.interval",
                "must have a positive value",
            ),
            (
                "networking.inbound[0].serviceProbe.unhealthyThreshold",
                "must have a positive value",
            ),
        ],
    );
}

#[test]
fn dataplane_reachable_backends() {
    expect(
        &dataplane(
            "address: 192.168.0.1\ntransparentProxying:\n  reachableBackends:\n    refs:\n      - kind: MeshGateway\n        name: a\n      - kind: MeshService\n        name: b\n        labels:\n          x: y\n      - kind: MeshService\n        namespace: ns",
        ),
        &[
            (
                "networking.transparentProxying.reachableBackends.refs[0].kind",
                "invalid value. Available values are: MeshExternalService,MeshMultiZoneService,MeshService",
            ),
            (
                "networking.transparentProxying.reachableBackends.refs[1].labels",
                "labels cannot be defined when name is specified",
            ),
            (
                "networking.transparentProxying.reachableBackends.refs[2].name",
                "name is required, when namespace is defined",
            ),
        ],
    );
}

#[test]
fn dataplane_typed_access() {
    let yaml = dataplane(
        "address: 10.0.0.1\ninbound:\n  - port: 8080\n    servicePort: 18080\n    name: http\n  - port: 9090\n    tags:\n      kuma.io/service: metrics",
    );
    let value: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    let input = ResourceInput::from_kuma_json(value, None).unwrap();
    let dp: specs::Dataplane = serde_json::from_value(input.spec).unwrap();
    let net = dp.networking.unwrap();
    assert_eq!(net.inbound[0].section_name(), "http");
    assert_eq!(net.inbound[0].workload_port(), 18080);
    assert_eq!(net.inbound[1].section_name(), "9090");
    assert_eq!(net.inbound[1].service(), Some("metrics"));
    assert_eq!(net.inbound[0].workload_address(), "127.0.0.1");
    assert_eq!(net.inbound_address(&net.inbound[0]), "10.0.0.1");
    assert!(net.inbound[0].is_ready());
}

#[test]
fn dataplane_inbound_readiness() {
    let yaml = dataplane(
        "address: 10.0.0.1\ninbound:\n  - port: 1\n    state: NotReady\n  - port: 2\n    health:\n      ready: false\n  - port: 3\n    state: Ignored\n  - port: 4",
    );
    let value: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    let input = ResourceInput::from_kuma_json(value, None).unwrap();
    let dp: specs::Dataplane = serde_json::from_value(input.spec).unwrap();
    let ready: Vec<u32> = dp
        .active_inbounds()
        .filter(|i| i.is_ready())
        .map(|i| i.port)
        .collect();
    assert_eq!(ready, vec![4]);
    assert_eq!(dp.active_inbounds().count(), 3);
}

// --- other policies

#[test]
fn meshtrafficpermission_rules_required() {
    expect(
        &policy("MeshTrafficPermission", "targetRef:\n  kind: Mesh"),
        &[("spec", "policy must define rules")],
    );
    expect(
        &policy(
            "MeshTrafficPermission",
            "rules:\n  - default:\n      allow:\n        - spiffeID:\n            type: Exact\n            value: not-a-spiffe-id",
        ),
        &[(
            "spec.rules[0].default.allow[0].spiffeID",
            "must be a valid Spiffe ID: scheme is missing or invalid",
        )],
    );
}

#[test]
fn meshretry_messages() {
    expect(
        &policy(
            "MeshRetry",
            "to:\n  - targetRef:\n      kind: Mesh\n    default:\n      http:\n        retryOn: [Teapot]\n      grpc: {}",
        ),
        &[
            (
                "spec.to[0].default.http.retryOn[0]",
                "unknown item 'Teapot'",
            ),
            ("spec.to[0].default.grpc", "must not be empty"),
        ],
    );
}

#[test]
fn meshhttproute_paths() {
    expect(
        &policy(
            "MeshHTTPRoute",
            "to:\n  - targetRef:\n      kind: MeshService\n      labels:\n        kuma.io/display-name: b\n    rules:\n      - matches:\n          - path:\n              type: Exact\n              value: relative\n        default: {}",
        ),
        &[(
            "spec.to[0].rules[0].matches[0].path.value",
            "must be an absolute path",
        )],
    );
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    expect(
        &policy(
            "MeshTimeout",
            "to:\n  - targetRef:\n      kind: Mesh\n    default:\n      idleTimeot: 1s",
        ),
        &[(
            "spec.to[0].default.idleTimeot",
            "unknown field `idleTimeot`, expected one of `connectionTimeout`, `idleTimeout`, `http`",
        )],
    );
}

// --- other kinds

#[test]
fn zone_names_are_dns_1035_labels() {
    valid("type: Zone\nname: zone-1\n");
    assert_eq!(violations("type: Zone\nname: 1zone\n")[0].0, "name");
}

#[test]
fn secrets_decode_and_accept_the_wrapper_form() {
    valid("type: Secret\nname: s\nmesh: default\ndata:\n  value: dGVzdAo=\n");
    expect(
        "type: Secret\nname: s\nmesh: default\ndata: '***'\n",
        &[("data", "must be valid base64")],
    );
    expect(
        "type: Secret\nname: s\nmesh: default\n",
        &[("data", "cannot be empty")],
    );
}

#[test]
fn mesh_external_service_endpoints() {
    expect(
        "type: MeshExternalService\nname: ext\nmesh: default\nspec:\n  match:\n    port: 443\n  endpoints:\n    - address: example.com\n      port: 0\n",
        &[("spec.endpoints[0].port", "port must be a valid (1-65535)")],
    );
    expect(
        "type: MeshExternalService\nname: Ext\nmesh: default\nspec:\n  match:\n    port: 443\n",
        &[(
            "name",
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
        )],
    );
}

#[test]
fn read_only_kinds_accept_what_kuma_reports() {
    valid(
        r#"
type: DataplaneInsight
name: dp-1
mesh: default
subscriptions:
  - id: 3a7c
    controlPlaneInstanceId: cp-1
    connectTime: "2024-05-01T10:00:00Z"
    status:
      lastUpdateTime: "2024-05-01T10:00:05Z"
      total: {responsesSent: "4", responsesAcknowledged: "4"}
      cds: {responsesSent: "1", responsesAcknowledged: 1}
    version:
      kumaDp: {version: 2.9.0, kumaCpCompatible: true}
      envoy: {version: 1.31.0, kumaDpCompatible: true}
mTLS:
  issuedBackend: identity
  certificateRegenerations: 1
"#,
    );
    valid(
        "type: ZoneInsight\nname: zone-1\nsubscriptions:\n  - id: x\n    globalInstanceId: g\n    status:\n      stat:\n        MeshTimeout: {responsesSent: '3'}\n",
    );
    valid(
        "type: MeshInsight\nname: default\ndataplanes: {total: 3, online: 2, offline: 1}\nresources:\n  MeshTimeout: {total: 2}\n",
    );
    valid(
        "type: ServiceInsight\nname: all-services-default\nmesh: default\nservices:\n  backend:\n    status: partially_degraded\n    dataplanes: {total: 2, online: 1, offline: 1}\n    serviceType: internal\n",
    );
}

#[test]
fn meshretry_status_codes_may_be_numbers() {
    valid(&policy(
        "MeshRetry",
        "to:\n  - targetRef:\n      kind: Mesh\n    default:\n      http:\n        retryOn: [500, \"503\", 5xx]",
    ));
    expect(
        &policy(
            "MeshRetry",
            "to:\n  - targetRef:\n      kind: Mesh\n    default:\n      http:\n        retryOn: [999]",
        ),
        &[("spec.to[0].default.http.retryOn[0]", "unknown item '999'")],
    );
}

#[test]
fn meshtrace_datadog_url_is_host_and_port_only() {
    expect(
        &policy(
            "MeshTrace",
            "default:\n  backends:\n    - type: Datadog\n      datadog:\n        url: http://intake.datadoghq.eu:8126/some/path",
        ),
        &[(
            "spec.default.backends[0].datadog.url",
            "path must not be defined",
        )],
    );
}

#[test]
fn meshratelimit_tcp_cannot_depend_on_spiffe_id() {
    expect(
        &policy(
            "MeshRateLimit",
            "targetRef:\n  kind: Dataplane\nrules:\n  - matches:\n      - spiffeID:\n          type: Exact\n          value: spiffe://default/client\n    default:\n      local:\n        tcp:\n          connectionRate:\n            num: 100\n            interval: 100ms",
        ),
        &[(
            "spec.rules[0].default.local.tcp",
            "can't be specified when matches contain spiffeID because this field cannot be conditioned on source identity",
        )],
    );
}

#[test]
fn meshaccesslog_paths_and_json_keys() {
    expect(
        &policy(
            "MeshAccessLog",
            "rules:\n  - default:\n      backends:\n        - type: File\n          file:\n            path: '#not_valid'",
        ),
        &[(
            "spec.rules[0].default.backends[0].file.path",
            "file backend requires a valid path",
        )],
    );
    expect(
        &policy(
            "MeshAccessLog",
            "rules:\n  - default:\n      backends:\n        - type: File\n          file:\n            path: /tmp/logs.txt\n            format:\n              type: Json\n              json:\n                - key: '\"'\n                  value: '%START_TIME%'",
        ),
        &[(
            "spec.rules[0].default.backends[0].file.format.json[0]",
            "is not a valid JSON object",
        )],
    );
}
