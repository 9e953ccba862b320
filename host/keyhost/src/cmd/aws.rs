//! `keystore.aws.secretsmanager` (and the MinIO guide's `keystore.secretsmanager`): the
//! bundled AWS plugin, granted exactly the endpoints the configuration names.

use keyhost_config::AwsSecretsManager;
use keyhost_plugin_host::{Grants, Origin, PluginSource, PluginSpec};

/// The field the errors name (the MinIO guide's alias maps onto it).
const FIELD: &str = "keystore.aws.secretsmanager";

/// Where EC2's instance metadata service answers.
const IMDS: &str = "http://169.254.169.254";

/// The process environment, as far as the AWS keystore reads it.
pub trait Env {
    /// The value of `name`, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The server's real environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

/// The plugin specification for an AWS keystore: settings, and grants for the
/// Secrets Manager endpoint, the KMS endpoint (only with a `kmskey`) and the
/// instance metadata service (only when no credentials are configured or in the
/// environment).
pub fn spec(aws: &AwsSecretsManager, file: &str, env: &dyn Env) -> Result<PluginSpec, String> {
    let bundled = keyhost_bundled::AWS;
    let mut spec = PluginSpec::new(
        "aws",
        PluginSource::Embedded {
            label: format!("builtin:{}", bundled.name),
            bytes: bundled.wasm,
        },
    );
    let mut http = Vec::new();
    let endpoint = endpoint_url(&aws.endpoint, &format!("{FIELD}.endpoint"), file)?;
    http.push(origin(&endpoint, &format!("{FIELD}.endpoint"), file)?);
    let config = &mut spec.config;
    config.insert("endpoint".into(), endpoint);
    config.insert("region".into(), aws.region.clone());

    if let Some(key) = &aws.kms_key {
        let kms = match &aws.kms_endpoint {
            Some(e) => endpoint_url(e, &format!("{FIELD}.kms_endpoint"), file)?,
            None => format!("https://kms.{}.amazonaws.com", aws.region),
        };
        http.push(origin(&kms, &format!("{FIELD}.kms_endpoint"), file)?);
        config.insert("kmskey".into(), key.clone());
        config.insert("kms_endpoint".into(), kms);
        if aws.kms_envelope {
            config.insert("kms_envelope".into(), "true".into());
        }
    } else if aws.kms_envelope {
        return Err(format!(
            "{file}: {FIELD}.kms_envelope: needs {FIELD}.kmskey, the KMS key that wraps the records"
        ));
    }

    // Credentials: the configuration's, else the standard variables of the
    // server's environment (the plugin never sees the environment itself), else
    // the instance metadata service.
    let configured = (
        aws.access_key.clone(),
        aws.secret_key.clone(),
        aws.session_token.clone(),
    );
    let from_env = (
        env.var("AWS_ACCESS_KEY_ID"),
        env.var("AWS_SECRET_ACCESS_KEY"),
        env.var("AWS_SESSION_TOKEN"),
    );
    let (access, secret, token) = match configured {
        (None, None, None) => from_env,
        (Some(a), Some(s), t) => (Some(a), Some(s), t),
        _ => {
            return Err(format!(
                "{file}: {FIELD}.credentials: set both accesskey and secretkey (and token for \
                 temporary credentials), or none to use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY \
                 or the instance's role"
            ));
        }
    };
    match (access, secret) {
        (Some(access), Some(secret)) => {
            config.insert("accesskey".into(), access);
            config.insert("secretkey".into(), secret);
            if let Some(token) = token {
                config.insert("token".into(), token);
            }
        }
        (None, None) => {
            if env
                .var("AWS_EC2_METADATA_DISABLED")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            {
                return Err(format!(
                    "{file}: {FIELD}.credentials: none configured, none in AWS_ACCESS_KEY_ID/\
                     AWS_SECRET_ACCESS_KEY, and AWS_EC2_METADATA_DISABLED forbids the instance's role"
                ));
            }
            let imds = env
                .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                .unwrap_or_else(|| IMDS.to_owned());
            let imds = imds.trim_end_matches('/').to_owned();
            http.push(origin(&imds, "AWS_EC2_METADATA_SERVICE_ENDPOINT", file)?);
            config.insert("imds_endpoint".into(), imds);
        }
        _ => {
            return Err(format!(
                "{file}: {FIELD}.credentials: the environment sets only one of AWS_ACCESS_KEY_ID \
                 and AWS_SECRET_ACCESS_KEY; set both"
            ));
        }
    }
    // The plugin's budget for a call (`timeout_ms`) comes from the runtime, which
    // serves 80% of the call deadline to every plugin that reads it.
    spec.grants = Grants {
        http,
        dir: None,
        ..Grants::default()
    };
    Ok(spec)
}

/// An endpoint as a URL: `host[:port]` means https. Catches the MinIO guide's
/// `secretsmanager.REGION.amazonaws` (no `.com`). Parsed once
/// ([`keyhost_url::HttpUrl`]); the canonical form is what the plugin is given.
fn endpoint_url(raw: &str, field: &str, file: &str) -> Result<String, String> {
    let raw = raw.trim().trim_end_matches('/');
    let text = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("https://{raw}")
    };
    if raw.contains("REGION") {
        return Err(format!(
            "{file}: {field}: '{raw}' still says REGION; write your region, e.g. secretsmanager.us-east-1.amazonaws.com"
        ));
    }
    let url = keyhost_url::HttpUrl::parse(&text).map_err(|e| format!("{file}: {field}: {e}"))?;
    let host = url.host();
    if host.ends_with(".amazonaws") {
        return Err(format!(
            "{file}: {field}: '{raw}' lacks '.com'; write {host}.com (the AWS endpoint host is <service>.<region>.amazonaws.com)"
        ));
    }
    Ok(url.endpoint().to_owned())
}

fn origin(url: &str, field: &str, file: &str) -> Result<Origin, String> {
    Origin::parse(url).map_err(|e| format!("{file}: {field}: {e}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Vars(HashMap<&'static str, &'static str>);

    impl Env for Vars {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| (*v).to_owned())
        }
    }

    fn aws(endpoint: &str) -> AwsSecretsManager {
        AwsSecretsManager {
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            access_key: Some("AKIA".into()),
            secret_key: Some("secret".into()),
            ..AwsSecretsManager::default()
        }
    }

    fn grants(spec: &PluginSpec) -> Vec<String> {
        spec.grants.http.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_guides_endpoint_without_com_is_explained() {
        let none = Vars(HashMap::new());
        let e = spec(&aws("secretsmanager.us-east-1.amazonaws"), "kes.yaml", &none).unwrap_err();
        assert!(e.contains("kes.yaml: keystore.aws.secretsmanager.endpoint"), "{e}");
        assert!(e.contains("write secretsmanager.us-east-1.amazonaws.com"), "{e}");
        let e = spec(&aws("secretsmanager.REGION.amazonaws"), "kes.yaml", &none).unwrap_err();
        assert!(e.contains("still says REGION"), "{e}");
    }

    #[test]
    fn grants_name_only_the_configured_endpoints() {
        let none = Vars(HashMap::new());
        let s = spec(&aws("secretsmanager.us-east-1.amazonaws.com"), "f", &none).unwrap();
        assert_eq!(grants(&s), ["https://secretsmanager.us-east-1.amazonaws.com:443"]);
        assert_eq!(s.config["endpoint"], "https://secretsmanager.us-east-1.amazonaws.com");
        assert!(!s.config.contains_key("imds_endpoint"));

        let mut with_kms = aws("http://127.0.0.1:4566");
        with_kms.kms_key = Some("alias/minio".into());
        let s = spec(&with_kms, "f", &none).unwrap();
        assert_eq!(
            grants(&s),
            ["http://127.0.0.1:4566", "https://kms.us-east-1.amazonaws.com:443"]
        );
        assert_eq!(s.config["kms_endpoint"], "https://kms.us-east-1.amazonaws.com");
    }

    #[test]
    fn credentials_come_from_config_then_environment_then_instance_role() {
        let env = Vars(HashMap::from([
            ("AWS_ACCESS_KEY_ID", "ENVKEY"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_SESSION_TOKEN", "envtoken"),
        ]));
        let s = spec(&aws("https://sm.example"), "f", &env).unwrap();
        assert_eq!(s.config["accesskey"], "AKIA");
        assert!(!s.config.contains_key("token"));

        let mut bare = aws("https://sm.example");
        bare.access_key = None;
        bare.secret_key = None;
        let s = spec(&bare, "f", &env).unwrap();
        assert_eq!(
            (s.config["accesskey"].as_str(), s.config["token"].as_str()),
            ("ENVKEY", "envtoken")
        );
        assert_eq!(grants(&s).len(), 1);

        let s = spec(&bare, "f", &Vars(HashMap::new())).unwrap();
        assert_eq!(s.config["imds_endpoint"], "http://169.254.169.254");
        assert_eq!(grants(&s), ["https://sm.example:443", "http://169.254.169.254:80"]);

        let disabled = Vars(HashMap::from([("AWS_EC2_METADATA_DISABLED", "true")]));
        assert!(
            spec(&bare, "f", &disabled)
                .unwrap_err()
                .contains("AWS_EC2_METADATA_DISABLED")
        );

        let mut half = aws("https://sm.example");
        half.secret_key = None;
        assert!(
            spec(&half, "f", &env)
                .unwrap_err()
                .contains("set both accesskey and secretkey")
        );
    }

    #[test]
    fn envelope_needs_a_kms_key() {
        let mut a = aws("https://sm.example");
        a.kms_envelope = true;
        let e = spec(&a, "f", &Vars(HashMap::new())).unwrap_err();
        assert!(e.contains("kms_envelope: needs"), "{e}");
    }
}
