//! Authentication: per-tenant API keys (`authorization: Bearer <key>`) on public RPCs, a
//! service credential on internal RPCs, and an explicit single-tenant development mode when no
//! keys are configured.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The tenant of development mode, when no API keys are configured.
pub const DEV_TENANT: &str = "default";

/// Where API keys come from.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuthArgs {
    /// Tenant API keys as `tenant=key` pairs, comma-separated.
    #[arg(long, env = "LEADFLOW_API_KEYS", value_delimiter = ',')]
    pub api_keys: Vec<String>,
    /// A file of tenant API keys, one `tenant=key` per line (`#` starts a comment).
    #[arg(long, env = "LEADFLOW_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// The service credential internal RPCs (outbox deliveries, timeline lookups) require and
    /// send.
    #[arg(long, env = "LEADFLOW_INTERNAL_KEY")]
    pub internal_key: Option<String>,
}

/// Why the key configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// An entry is not `tenant=key`.
    #[error("api key entry {index} is not of the form tenant=key")]
    Malformed {
        /// 1-based position of the entry.
        index: usize,
    },
    /// The same key was given to two tenants.
    #[error("an api key is configured twice")]
    DuplicateKey,
    /// Tenant keys are configured but the internal key is not.
    #[error("api keys are configured but LEADFLOW_INTERNAL_KEY is not")]
    MissingInternalKey,
    /// The key file could not be read.
    #[error("cannot read the api keys file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The tenant a request acts for, set by [`AuthInterceptor`] on public RPCs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant(pub String);

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The configured keys: tenant keys and the internal service credential.
#[derive(Clone, Default)]
pub struct Keys {
    tenants_by_key: Arc<HashMap<String, String>>,
    internal_key: Option<Arc<str>>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("tenant_keys", &self.tenants_by_key.len())
            .field("internal_key", &self.internal_key.is_some())
            .finish()
    }
}

impl Keys {
    /// Reads the keys from the arguments (the list and the file together).
    pub fn from_args(args: &AuthArgs) -> Result<Self, AuthConfigError> {
        let mut entries: Vec<String> = args.api_keys.clone();
        if let Some(path) = &args.api_keys_file {
            let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::File {
                path: path.display().to_string(),
                source,
            })?;
            entries.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        let mut tenants_by_key = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            let (tenant, key) = entry
                .trim()
                .split_once('=')
                .map(|(t, k)| (t.trim(), k.trim()))
                .filter(|(t, k)| !t.is_empty() && !k.is_empty())
                .ok_or(AuthConfigError::Malformed { index: index + 1 })?;
            if tenants_by_key
                .insert(key.to_owned(), tenant.to_owned())
                .is_some()
            {
                return Err(AuthConfigError::DuplicateKey);
            }
        }
        let internal_key = args.internal_key.as_deref().filter(|k| !k.is_empty());
        if !tenants_by_key.is_empty() && internal_key.is_none() {
            return Err(AuthConfigError::MissingInternalKey);
        }
        Ok(Self {
            tenants_by_key: Arc::new(tenants_by_key),
            internal_key: internal_key.map(Arc::from),
        })
    }

    /// True when no tenant key is configured: every public call acts for [`DEV_TENANT`].
    pub fn is_dev_mode(&self) -> bool {
        self.tenants_by_key.is_empty()
    }

    /// The internal service credential, if any.
    pub fn internal_key(&self) -> Option<&str> {
        self.internal_key.as_deref()
    }

    /// Logs which mode the service runs in; called once at start-up.
    pub fn log_mode(&self, service: &str) {
        if self.is_dev_mode() {
            tracing::warn!(
                service,
                tenant = DEV_TENANT,
                "no api keys configured: running in single-tenant development mode, every call is accepted"
            );
        } else {
            tracing::info!(
                service,
                tenants = self.tenant_count(),
                "api key authentication on"
            );
        }
    }

    fn tenant_count(&self) -> usize {
        let mut tenants: Vec<&String> = self.tenants_by_key.values().collect();
        tenants.sort();
        tenants.dedup();
        tenants.len()
    }

    /// An interceptor for a public service: resolves the tenant from the bearer key.
    pub fn public(&self) -> AuthInterceptor {
        AuthInterceptor {
            keys: self.clone(),
            internal: false,
        }
    }

    /// An interceptor for an internal service: requires the service credential.
    pub fn internal(&self) -> AuthInterceptor {
        AuthInterceptor {
            keys: self.clone(),
            internal: true,
        }
    }
}

/// Checks the bearer key of each call and records the caller's [`Tenant`] in the request.
#[derive(Debug, Clone)]
pub struct AuthInterceptor {
    keys: Keys,
    internal: bool,
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let bearer = bearer_token(&request)?;
        if self.internal {
            return match (self.keys.internal_key(), bearer) {
                (None, _) if self.keys.is_dev_mode() => Ok(request),
                (Some(expected), Some(given)) if constant_time_eq(expected, given) => Ok(request),
                (_, Some(given)) if self.keys.tenants_by_key.contains_key(given) => Err(
                    Status::permission_denied("internal rpc: a tenant key may not call it"),
                ),
                _ => Err(Status::unauthenticated(
                    "missing or unknown service credential",
                )),
            };
        }
        let tenant = if self.keys.is_dev_mode() {
            DEV_TENANT.to_owned()
        } else {
            let key = bearer.ok_or_else(|| {
                Status::unauthenticated("missing api key: send authorization: Bearer <key>")
            })?;
            match self.keys.tenants_by_key.get(key) {
                Some(tenant) => tenant.clone(),
                None if self
                    .keys
                    .internal_key()
                    .is_some_and(|k| constant_time_eq(k, key)) =>
                {
                    return Err(Status::permission_denied(
                        "the service credential cannot call public rpcs",
                    ));
                }
                None => return Err(Status::unauthenticated("unknown api key")),
            }
        };
        request.extensions_mut().insert(Tenant(tenant));
        Ok(request)
    }
}

fn bearer_token<T>(request: &Request<T>) -> Result<Option<&str>, Status> {
    let Some(value) = request.metadata().get("authorization") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization header is not ascii"))?;
    value
        .strip_prefix("Bearer ")
        .map(|token| Some(token.trim()))
        .ok_or_else(|| Status::unauthenticated("authorization must be a bearer token"))
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The tenant a public call acts for, as set by the auth interceptor.
pub fn tenant_of<T>(request: &Request<T>) -> Result<Tenant, Status> {
    request
        .extensions()
        .get::<Tenant>()
        .cloned()
        .ok_or_else(|| Status::internal("tenant missing: the service is not behind authentication"))
}

/// Adds the bearer credential to outgoing calls (a service credential for internal calls, or a
/// tenant key for clients).
#[derive(Clone)]
pub struct BearerInterceptor {
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl fmt::Debug for BearerInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerInterceptor")
            .field("credential", &self.header.is_some())
            .finish()
    }
}

impl BearerInterceptor {
    /// Sends `Bearer <key>` when a key is given, nothing otherwise.
    pub fn new(key: Option<&str>) -> Result<Self, Status> {
        let header = key
            .map(|key| {
                format!("Bearer {key}")
                    .parse()
                    .map_err(|_| Status::invalid_argument("the key is not valid ascii"))
            })
            .transpose()?;
        Ok(Self { header })
    }
}

impl Interceptor for BearerInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::from_args(&AuthArgs {
            api_keys: vec!["acme=key-a".into(), "globex=key-b".into()],
            api_keys_file: None,
            internal_key: Some("internal".into()),
        })
        .expect("valid keys")
    }

    fn call(interceptor: &mut AuthInterceptor, key: Option<&str>) -> Result<Request<()>, Status> {
        let mut request = Request::new(());
        if let Some(key) = key {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {key}").parse().expect("ascii"),
            );
        }
        interceptor.call(request)
    }

    #[test]
    fn tenant_comes_from_the_key() {
        let request = call(&mut keys().public(), Some("key-b")).expect("accepted");
        assert_eq!(tenant_of(&request).expect("tenant").0, "globex");
    }

    #[test]
    fn public_calls_without_or_with_wrong_keys_are_unauthenticated() {
        for key in [None, Some("nope"), Some("")] {
            let status = call(&mut keys().public(), key).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{key:?}");
        }
    }

    #[test]
    fn internal_rpcs_refuse_tenant_keys_and_accept_the_service_credential() {
        let status = call(&mut keys().internal(), Some("key-a")).expect_err("refused");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        let status = call(&mut keys().internal(), None).expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(call(&mut keys().internal(), Some("internal")).is_ok());
        let status = call(&mut keys().public(), Some("internal")).expect_err("refused");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn dev_mode_accepts_everything_as_the_default_tenant() {
        let keys = Keys::from_args(&AuthArgs::default()).expect("dev mode");
        assert!(keys.is_dev_mode());
        let request = call(&mut keys.public(), None).expect("accepted");
        assert_eq!(tenant_of(&request).expect("tenant").0, DEV_TENANT);
        assert!(call(&mut keys.internal(), None).is_ok());
    }

    #[test]
    fn misconfiguration_is_reported() {
        let malformed = AuthArgs {
            api_keys: vec!["acme".into()],
            internal_key: Some("i".into()),
            ..AuthArgs::default()
        };
        assert!(matches!(
            Keys::from_args(&malformed),
            Err(AuthConfigError::Malformed { index: 1 })
        ));
        let no_internal = AuthArgs {
            api_keys: vec!["acme=k".into()],
            ..AuthArgs::default()
        };
        assert!(matches!(
            Keys::from_args(&no_internal),
            Err(AuthConfigError::MissingInternalKey)
        ));
    }
}
