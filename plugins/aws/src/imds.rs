//! Credentials from the EC2 instance metadata service, version 2 (session tokens).
//!
//! keyhost grants the plugin the metadata endpoint only when the configuration has
//! no static credentials and the server's environment has none either.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};
use aws_smithy_types::date_time::{DateTime, Format};
use wstd::http::{Body, Client, Method, Request};

/// How long a metadata session token lives, in seconds (the maximum: six hours).
const TOKEN_TTL: &str = "21600";

#[derive(Debug)]
pub struct Imds {
    endpoint: String,
}

impl Imds {
    pub fn new(endpoint: String) -> Self {
        Self { endpoint }
    }

    async fn fetch(&self) -> Result<Credentials, CredentialsError> {
        let client = Client::new();
        let token = text(
            &client,
            Request::builder()
                .method(Method::PUT)
                .uri(format!("{}/latest/api/token", self.endpoint))
                .header("x-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL),
        )
        .await?;
        let base = format!("{}/latest/meta-data/iam/security-credentials/", self.endpoint);
        let roles = text(
            &client,
            Request::builder().uri(&base).header("x-aws-ec2-metadata-token", &token),
        )
        .await?;
        let role = roles
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or_else(|| CredentialsError::not_loaded("the instance has no IAM role attached"))?;
        let document = text(
            &client,
            Request::builder()
                .uri(format!("{base}{role}"))
                .header("x-aws-ec2-metadata-token", &token),
        )
        .await?;
        let json: serde_json::Value = serde_json::from_str(&document)
            .map_err(|e| CredentialsError::unhandled(format!("instance metadata: credentials are not JSON: {e}")))?;
        let field = |name: &str| {
            json.get(name)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .ok_or_else(|| CredentialsError::unhandled(format!("instance metadata: credentials lack {name}")))
        };
        if let Some(code) = json.get("Code").and_then(|v| v.as_str())
            && code != "Success"
        {
            return Err(CredentialsError::provider_error(format!(
                "instance metadata: credentials not available ({code})"
            )));
        }
        let expiry = json
            .get("Expiration")
            .and_then(|v| v.as_str())
            .and_then(|s| DateTime::from_str(s, Format::DateTime).ok())
            .and_then(|d| SystemTime::try_from(d).ok());
        Ok(Credentials::new(
            field("AccessKeyId")?,
            field("SecretAccessKey")?,
            json.get("Token").and_then(|v| v.as_str()).map(str::to_owned),
            expiry,
            "keyhost-imds",
        ))
    }
}

async fn text(client: &Client, request: wstd::http::request::Builder) -> Result<String, CredentialsError> {
    let request = request
        .body(Body::empty())
        .map_err(|e| CredentialsError::unhandled(format!("instance metadata request: {e}")))?;
    let uri = request.uri().path().to_owned();
    let mut response = client
        .send(request)
        .await
        .map_err(|e| CredentialsError::provider_error(format!("instance metadata {uri}: {e}")))?;
    let status = response.status();
    let body = response
        .body_mut()
        .str_contents()
        .await
        .map_err(|e| CredentialsError::provider_error(format!("instance metadata {uri}: {e}")))?
        .to_owned();
    if !status.is_success() {
        return Err(CredentialsError::provider_error(format!(
            "instance metadata {uri}: HTTP {status}"
        )));
    }
    Ok(body)
}

impl ProvideCredentials for Imds {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.fetch())
    }
}
