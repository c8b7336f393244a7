//! config, generate, version, completion and error handling against a real
//! kuma-cp.

use crate::support::{ControlPlane, Kumactl, assert_golden, free_port, jwt_claims};

#[test]
fn control_planes_add_list_switch_remove() {
    let cp = ControlPlane::start();
    let k = Kumactl::new();
    let add = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "config",
            "control-planes",
            "add",
            "--name",
            name,
            "--address",
            &cp.url,
        ];
        args.extend_from_slice(extra);
        k.run(&args)
    };
    assert_eq!(
        add("first", &[]).ok(),
        "added Control Plane \"first\"\nswitched active Control Plane to \"first\"\n"
    );
    add("second", &[]).ok();
    let err = add("second", &[]).fails();
    assert!(err.contains("already exists. Use --overwrite"), "{err}");
    add("second", &["--overwrite"]).ok();

    let list = k.run(&["config", "control-planes", "list"]).ok();
    assert_golden(
        "control-planes-list.txt",
        &list.replace(&cp.url, "http://127.0.0.1:<port>"),
    );

    assert_eq!(
        k.run(&["config", "control-planes", "switch", "--name", "first"])
            .ok(),
        "switched active Control Plane to \"first\"\n"
    );
    let list = k.run(&["config", "control-planes", "list"]).ok();
    assert!(
        list.lines().any(|l| l.starts_with("*        first")),
        "{list}"
    );
    let view = k.run(&["config", "view"]).ok();
    assert!(view.contains("currentContext: first"), "{view}");
    let saved = std::fs::read_to_string(&k.config).unwrap();
    assert_eq!(view, saved);

    // The active control plane is the one commands talk to.
    assert!(k.run(&["get", "meshes"]).ok().contains("default"));

    let err = k
        .run(&["config", "control-planes", "switch", "--name", "nope"])
        .fails();
    assert!(
        err.contains("there is no Control Plane with name \"nope\""),
        "{err}"
    );

    let out = k
        .run(&["config", "control-planes", "remove", "--name", "first"])
        .ok();
    assert_eq!(
        out,
        "removed Control Plane \"first\"\nswitched active Control Plane to \"second\"\n"
    );
    let out = k
        .run(&["config", "control-planes", "remove", "--name", "second"])
        .ok();
    assert!(
        out.contains("there is no active Control Plane left"),
        "{out}"
    );
    assert_eq!(
        k.run(&["config", "control-planes", "list"]).ok(),
        "ACTIVE   NAME   ADDRESS\n"
    );

    // Adding checks the address answers as a Kuma control plane.
    let down = format!("http://127.0.0.1:{}", free_port());
    let err = k
        .run(&[
            "config",
            "control-planes",
            "add",
            "--name",
            "down",
            "--address",
            &down,
        ])
        .fails();
    assert!(
        err.starts_with("Error: could not connect to the Control Plane API Server"),
        "{err}"
    );
    assert!(err.contains(&down), "{err}");
    k.run(&[
        "config",
        "control-planes",
        "add",
        "--name",
        "down",
        "--address",
        &down,
        "--skip-check",
    ])
    .ok();
}

#[test]
fn add_refuses_a_server_that_is_not_kuma() {
    // A one-shot HTTP server claiming another product.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut socket, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = socket.read(&mut buf).unwrap();
        let body = r#"{"product":"Other Mesh","version":"1.0.0"}"#;
        write!(
            socket,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    let k = Kumactl::new();
    let err = k
        .run(&[
            "config",
            "control-planes",
            "add",
            "--name",
            "other",
            "--address",
            &url,
        ])
        .fails();
    server.join().unwrap();
    assert_eq!(
        err,
        "Error: this CLI is for Kuma but the control plane you're connected to is Other Mesh. Please use the CLI for your control plane\n"
    );
    assert_eq!(std::fs::read_to_string(&k.config).unwrap(), "");
}

#[test]
fn unreachable_control_plane_names_the_address() {
    let k = Kumactl::new();
    let url = format!("http://127.0.0.1:{}", free_port());
    k.run(&[
        "config",
        "control-planes",
        "add",
        "--name",
        "gone",
        "--address",
        &url,
        "--skip-check",
    ])
    .ok();
    let err = k.run(&["get", "meshes"]).fails();
    assert!(
        err.starts_with(&format!(
            "Error: could not reach the Control Plane API Server at {url}: "
        )),
        "{err}"
    );
    assert!(
        err.contains("`kumactl config control-planes list`"),
        "{err}"
    );
    assert!(
        !err.contains('\x1b'),
        "no colour when stderr is not a TTY: {err:?}"
    );
}

#[test]
fn tokens_authenticate_and_a_bad_token_names_the_credential() {
    let cp = ControlPlane::start();
    let k = Kumactl::new();
    let admin = cp.admin_token();
    k.run(&[
        "config",
        "control-planes",
        "add",
        "--name",
        "admin",
        "--address",
        &cp.url,
        "--auth-type",
        "tokens",
        "--auth-conf",
        &format!("token={admin}"),
    ])
    .ok();
    assert!(k.run(&["get", "meshes"]).ok().contains("default"));

    let bad = Kumactl::new();
    bad.run(&[
        "config",
        "control-planes",
        "add",
        "--name",
        "forged",
        "--address",
        &cp.url,
        "--auth-type",
        "tokens",
        "--auth-conf",
        "token=eyJhbGciOiJSUzI1NiJ9.eyJOYW1lIjoiZXZlIn0.c2ln",
        "--skip-check",
    ])
    .ok();
    let err = bad.run(&["get", "meshes"]).fails();
    assert!(
        err.starts_with(&format!(
            "Error: the Control Plane API Server at {} refused the request: 401 Unauthorized",
            cp.url
        )),
        "{err}"
    );
    assert!(
        err.contains(
            "credential used: user token from authConf.token (authType: tokens) of Control Plane \"forged\""
        ),
        "{err}"
    );
    assert!(
        !err.contains("eyJ"),
        "the token itself is never printed: {err}"
    );
    // Adding a control plane with a refused token fails the check too.
    let err = bad
        .run(&[
            "config",
            "control-planes",
            "add",
            "--name",
            "forged2",
            "--address",
            &cp.url,
            "--auth-type",
            "tokens",
            "--auth-conf",
            "token=abc.def.ghi",
        ])
        .fails();
    assert!(err.contains("401"), "{err}");
}

#[test]
fn generate_tokens_through_the_api() {
    let cp = ControlPlane::start();
    let k = Kumactl::for_cp(&cp);

    let token = k
        .run(&[
            "generate",
            "user-token",
            "--name",
            "alice",
            "--group",
            "team-a,team-b",
            "--valid-for",
            "1h",
        ])
        .ok();
    let claims = jwt_claims(&token);
    assert_eq!(claims["Name"], "alice");
    assert_eq!(claims["Groups"], serde_json::json!(["team-a", "team-b"]));
    assert_valid_for(&claims, 3600);
    // The token works: a control plane configured with it answers.
    let alice = Kumactl::new();
    alice
        .run(&[
            "config",
            "control-planes",
            "add",
            "--name",
            "alice",
            "--address",
            &cp.url,
            "--auth-type",
            "tokens",
            "--auth-conf",
            &format!("token={token}"),
        ])
        .ok();

    let token = k
        .run(&[
            "generate",
            "dataplane-token",
            "--name",
            "dp-1",
            "-m",
            "default",
            "--tag",
            "kuma.io/service=web,web-api",
            "--valid-for",
            "24h",
        ])
        .ok();
    let claims = jwt_claims(&token);
    assert_eq!(claims["Name"], "dp-1");
    assert_eq!(claims["Mesh"], "default");
    assert_eq!(
        claims["Tags"]["kuma.io/service"],
        serde_json::json!(["web", "web-api"])
    );
    assert_valid_for(&claims, 86_400);

    let token = k
        .run(&[
            "generate",
            "zone-token",
            "--zone",
            "zone-1",
            "--scope",
            "egress",
            "--valid-for",
            "30m",
        ])
        .ok();
    let claims = jwt_claims(&token);
    assert_eq!(claims["Zone"], "zone-1");
    assert_eq!(claims["Scope"], serde_json::json!(["egress"]));
    assert_valid_for(&claims, 1800);
}

#[test]
fn generate_signing_key_and_tls_certificate_offline() {
    let k = Kumactl::new();
    let key = k.run(&["generate", "signing-key"]).ok();
    use base64::Engine as _;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .unwrap();
    assert!(
        String::from_utf8(pem).unwrap().contains("PRIVATE KEY-----"),
        "pem-base64 by default"
    );

    let cert = k.home.path().join("cert.pem");
    let key = k.home.path().join("key.pem");
    let out = k
        .run(&[
            "generate",
            "tls-certificate",
            "--type",
            "server",
            "--hostname",
            "localhost,cp.example",
            "--cert-file",
            cert.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(
        out,
        format!(
            "Private key saved in {}\nCertificate saved in {}\n",
            key.display(),
            cert.display()
        )
    );
    let cert_pem = std::fs::read_to_string(&cert).unwrap();
    assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("PRIVATE KEY")
    );
    let der = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .unwrap()
        .1;
    let cert = der.parse_x509().unwrap();
    let sans = cert.subject_alternative_name().unwrap().unwrap();
    let text = format!("{:?}", sans.value.general_names);
    assert!(
        text.contains("localhost") && text.contains("cp.example"),
        "{text}"
    );
}

#[test]
fn version_prints_client_and_server() {
    let cp = ControlPlane::start();
    let k = Kumactl::for_cp(&cp);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        k.run(&["version"]).ok(),
        format!("Client: Kuma {version}\nControl Plane: Kuma {version}\n")
    );
    let detailed = k.run(&["version", "-a"]).ok();
    assert!(detailed.starts_with("Product: Kuma\n"), "{detailed}");
    drop(cp);
    // Without a server, the client version still prints.
    assert_eq!(
        k.run(&["version"]).ok(),
        format!("Client: Kuma {version}\nControl Plane: unable to retrieve server version\n")
    );
}

#[test]
fn completion_scripts_for_every_shell() {
    let k = Kumactl::new();
    let bash = k.run(&["completion", "bash"]).ok();
    assert!(
        bash.contains("complete -F") && bash.contains("kumactl"),
        "bash"
    );
    let zsh = k.run(&["completion", "zsh"]).ok();
    assert!(zsh.starts_with("#compdef kumactl"), "zsh");
    let fish = k.run(&["completion", "fish"]).ok();
    assert!(fish.contains("complete -c kumactl"), "fish");
    for script in [&bash, &zsh, &fish] {
        assert!(script.contains("control-planes"));
        assert!(script.contains("meshtimeouts") || script.contains("dataplane-token"));
    }
    let err = k.run(&["completion", "powershell"]).fails();
    assert!(err.contains("powershell"), "{err}");
}

/// `exp` is `validFor` after issue; the issuer may backdate `iat` by a few
/// seconds against clock skew.
#[track_caller]
fn assert_valid_for(claims: &serde_json::Value, seconds: i64) {
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(
        (seconds..=seconds + 60).contains(&lifetime),
        "token lives {lifetime}s, asked for {seconds}s: {claims}"
    );
}
