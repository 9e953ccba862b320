//! The Kubernetes manifests of `deploy/kubernetes/` (the deployment, and the
//! template of its Secrets): valid against the Kubernetes API schema
//! (`kubernetes-validate --strict`, from the tests' Python venv), holding what
//! docs/container.md promises, and with a configuration keyhost accepts.

use std::process::Command;

/// Reads the manifests with PyYAML and prints, as JSON, the facts the docs promise.
const FACTS: &str = r#"
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
secrets = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
kind = lambda k: [d for d in docs if d["kind"] == k]
deployment = kind("Deployment")[0]
pod = deployment["spec"]["template"]["spec"]
container = pod["containers"][0]
config = kind("ConfigMap")[0]["data"]["config.yaml"]
print(json.dumps({
    "kinds": sorted(d["kind"] for d in docs),
    "secrets": sorted(d["kind"] + "/" + d["metadata"]["name"] for d in secrets),
    "secrets_read": sorted(
        [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
        + [e["secretRef"]["name"] for e in container.get("envFrom", [])]
    ),
    "automount": pod["automountServiceAccountToken"],
    "replicas": deployment["spec"]["replicas"],
    "image": container["image"],
    "args": container["args"],
    "run_as_non_root": pod["securityContext"]["runAsNonRoot"],
    "user": pod["securityContext"]["runAsUser"],
    "read_only_root": container["securityContext"]["readOnlyRootFilesystem"],
    "caps": container["securityContext"]["capabilities"],
    "readiness": [container["readinessProbe"]["httpGet"][k] for k in ("path", "scheme")],
    "liveness": [container["livenessProbe"]["httpGet"][k] for k in ("path", "scheme")],
    "startup": [container["startupProbe"]["httpGet"][k] for k in ("path", "scheme")],
    "mounts": sorted(m["mountPath"] for m in container["volumeMounts"]),
    "service_port": kind("Service")[0]["spec"]["ports"][0]["port"],
    "config": config,
}))
"#;

#[test]
fn the_kubernetes_manifests_are_valid_and_hold_what_the_docs_promise() {
    let venv = keyhost_test_support::install_moto();
    let dir = keyhost_plugin_build::repo_root().join("deploy/kubernetes");
    let (file, secrets) = (dir.join("keyhost.yaml"), dir.join("secrets.example.yaml"));

    let out = Command::new(venv.join("bin/kubernetes-validate"))
        .args(["--strict", "--quiet"])
        .arg(&file)
        .arg(&secrets)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(venv.join("bin/python"))
        .args(["-c", FACTS])
        .arg(&file)
        .arg(&secrets)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let facts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    assert_eq!(
        facts["kinds"],
        json(r#"["ConfigMap", "Deployment", "Service"]"#),
        "applying the deployment again must not overwrite real Secrets"
    );
    // The template holds exactly the Secrets the pods read.
    assert_eq!(
        facts["secrets"],
        json(r#"["Secret/keyhost-aws", "Secret/keyhost-tls"]"#)
    );
    assert_eq!(facts["secrets_read"], json(r#"["keyhost-aws", "keyhost-tls"]"#));
    assert_eq!(facts["automount"], false);
    assert_eq!(facts["replicas"], 2);
    assert_eq!(
        facts["image"],
        format!("registry.example.com/keyhost:{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        facts["args"],
        json(r#"["server", "--config", "/etc/keyhost/config/config.yaml", "--no-mlock"]"#)
    );
    assert_eq!(facts["run_as_non_root"], true);
    assert_eq!(facts["user"], 65532, "the image's user");
    assert_eq!(facts["read_only_root"], true);
    assert_eq!(facts["caps"], json(r#"{"drop": ["ALL"]}"#));
    assert_eq!(facts["readiness"], json(r#"["/v1/ready", "HTTPS"]"#));
    assert_eq!(facts["liveness"], json(r#"["/version", "HTTPS"]"#));
    assert_eq!(facts["startup"], json(r#"["/version", "HTTPS"]"#));
    assert_eq!(
        facts["mounts"],
        json(r#"["/data", "/etc/keyhost/config", "/etc/keyhost/tls"]"#)
    );
    assert_eq!(facts["service_port"], 7373);

    // The configuration is one keyhost accepts, with the variables the Secret
    // provides and no other, and lets the probes in without a client certificate
    // on their two routes only.
    let text = facts["config"].as_str().unwrap();
    let env = |name: &str| {
        ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
            .contains(&name)
            .then(|| "from-the-secret".to_owned())
    };
    let config = keyhost_config::Config::parse_with_env(std::path::Path::new("config.yaml"), text, &env)
        .unwrap_or_else(|e| panic!("the ConfigMap's config.yaml: {e}"));
    let skipped: Vec<&str> = config
        .api
        .iter()
        .filter(|(_, route)| route.skip_auth)
        .map(|(path, _)| path.as_str())
        .collect();
    assert_eq!(skipped, ["/v1/ready", "/version"], "{:?}", config.api);
}
