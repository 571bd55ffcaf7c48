//! A channel to the dispatcher: `http://` or `https://` (the CA file's roots or the
//! system's, and a client certificate for mTLS), with the API key on every call.

use std::time::Duration;

use kurir_proto::v1::dispatcher_client::DispatcherClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::args::ClientArgs;
use super::error::{error_chain, ClientError};

/// How long the client waits to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub type Client = DispatcherClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <key>` to every call, when a key is given.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

/// TLS for an `https://` endpoint: the CA file's roots (or the system's) and, for mTLS,
/// a client certificate. `None` for `http://`.
fn tls_config(args: &ClientArgs) -> Result<Option<ClientTlsConfig>, ClientError> {
    let https = args.endpoint.starts_with("https://");
    if !https {
        return Ok(None);
    }
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ClientError::File {
            path: path.display().to_string(),
            source,
        })
    };
    let mut tls = match &args.ca_file {
        Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?)),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(Some(tls))
}

/// A channel to the dispatcher at `args.endpoint` (`http://` or `https://`).
///
/// # Errors
/// A bad endpoint, an unreadable TLS file, or no connection within the timeout.
pub async fn channel(args: &ClientArgs) -> Result<Channel, ClientError> {
    let bad_endpoint = |e: tonic::transport::Error| ClientError::Endpoint {
        endpoint: args.endpoint.clone(),
        reason: error_chain(&e),
    };
    let mut endpoint = Endpoint::from_shared(args.endpoint.clone())
        .map_err(|e| ClientError::Endpoint {
            endpoint: args.endpoint.clone(),
            reason: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(tls) = tls_config(args)? {
        endpoint = endpoint.tls_config(tls).map_err(bad_endpoint)?;
    }
    endpoint.connect().await.map_err(|e| ClientError::Connect {
        endpoint: args.endpoint.clone(),
        reason: error_chain(&e),
    })
}

/// A dispatcher client over [`channel`], sending the API key when one is given.
///
/// # Errors
/// As [`channel`], or an API key that cannot be a header value.
pub async fn connect(args: &ClientArgs) -> Result<Client, ClientError> {
    let channel = channel(args).await?;
    let bearer = match &args.api_key {
        Some(key) => Some(
            format!("Bearer {}", key.expose())
                .parse()
                .map_err(|_| ClientError::ApiKey)?,
        ),
        None => None,
    };
    Ok(DispatcherClient::with_interceptor(channel, Bearer(bearer)))
}
