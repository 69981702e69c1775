//! The Azure Blob Storage backend: `azblob://CONTAINER/PREFIX`.
//!
//! Credentials and the endpoint come from the environment, as Azure's own
//! tools read them, never from a command's arguments:
//! `AZURE_STORAGE_CONNECTION_STRING`, or `AZURE_STORAGE_ACCOUNT` with
//! `AZURE_STORAGE_KEY` or `AZURE_STORAGE_SAS_TOKEN` (and
//! `AZURE_STORAGE_BLOB_ENDPOINT` for an endpoint other than the account's
//! public one).

use opendal::Operator;

use crate::grant::Granter;
use crate::opendal_store::{OpendalStore, map_err};
use crate::{StoreError, StoreErrorKind};

/// Where and as whom to reach the Blob service.
#[derive(Clone)]
pub(crate) struct AzureAccess {
    pub endpoint: String,
    pub account: String,
    pub key: Option<String>,
    pub sas: Option<String>,
}

impl std::fmt::Debug for AzureAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AzureAccess {{ endpoint: {}, account: {} }}", self.endpoint, self.account)
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Reads an Azure Storage connection string.
fn parse_connection_string(conn: &str) -> Result<AzureAccess, String> {
    let mut fields = std::collections::HashMap::new();
    for part in conn.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            format!("connection string part {k:?} is not Key=Value", k = part.split('=').next().unwrap_or(part))
        })?;
        fields.insert(k.to_ascii_lowercase(), v.to_string());
    }
    if fields.get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(AzureAccess {
            endpoint: format!("http://127.0.0.1:10000/{DEV_ACCOUNT}"),
            account: DEV_ACCOUNT.into(),
            key: Some(DEV_KEY.into()),
            sas: None,
        });
    }
    let account = fields.get("accountname").cloned();
    let endpoint = match (fields.get("blobendpoint"), &account) {
        (Some(e), _) => e.trim_end_matches('/').to_string(),
        (None, Some(a)) => {
            let protocol = fields.get("defaultendpointsprotocol").map_or("https", String::as_str);
            let suffix = fields.get("endpointsuffix").map_or("core.windows.net", String::as_str);
            format!("{protocol}://{a}.blob.{suffix}")
        }
        (None, None) => return Err("the connection string names neither AccountName nor BlobEndpoint".into()),
    };
    let account = account.or_else(|| account_from_endpoint(&endpoint)).unwrap_or_default();
    Ok(AzureAccess {
        endpoint,
        account,
        key: fields.get("accountkey").cloned(),
        sas: fields.get("sharedaccesssignature").cloned(),
    })
}

/// `https://ACCOUNT.blob.core.windows.net` or `http://HOST:PORT/ACCOUNT`.
fn account_from_endpoint(endpoint: &str) -> Option<String> {
    let rest = endpoint.split_once("://")?.1;
    match rest.split_once('/') {
        Some((_, path)) if !path.is_empty() => Some(path.trim_end_matches('/').to_string()),
        _ => rest.split('.').next().map(str::to_string),
    }
}

/// The access the environment describes.
pub(crate) fn access_from_env() -> Result<AzureAccess, StoreError> {
    let missing =
        |why: String| StoreError::new(StoreErrorKind::PermissionDenied, "open", "Azure Blob Storage").with_source(why);
    if let Some(conn) = env("AZURE_STORAGE_CONNECTION_STRING") {
        return parse_connection_string(&conn).map_err(|e| missing(format!("AZURE_STORAGE_CONNECTION_STRING: {e}")));
    }
    let Some(account) = env("AZURE_STORAGE_ACCOUNT") else {
        return Err(missing(
            "no credentials: set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN".into(),
        ));
    };
    let key = env("AZURE_STORAGE_KEY");
    let sas = env("AZURE_STORAGE_SAS_TOKEN");
    if key.is_none() && sas.is_none() {
        return Err(missing(format!(
            "AZURE_STORAGE_ACCOUNT is {account} but neither AZURE_STORAGE_KEY nor AZURE_STORAGE_SAS_TOKEN is set"
        )));
    }
    let endpoint = env("AZURE_STORAGE_BLOB_ENDPOINT")
        .map(|e| e.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"));
    Ok(AzureAccess { endpoint, account, key, sas })
}

/// Opens `azblob://CONTAINER/PREFIX` and checks that the container exists
/// and the credentials work.
///
/// # Errors
/// `NotFound` naming a missing container, `PermissionDenied` for missing
/// or wrong credentials, `Other` for an unreachable endpoint.
pub(crate) fn open(container: &str, prefix: &str, url: &str) -> Result<OpendalStore, StoreError> {
    let access = access_from_env()?;
    let store = build(&access, container, prefix, url)?;
    store.check(&format!("container {container} at {}", access.endpoint))?;
    Ok(store)
}

pub(crate) fn build(
    access: &AzureAccess,
    container: &str,
    prefix: &str,
    url: &str,
) -> Result<OpendalStore, StoreError> {
    let mut builder = opendal::services::Azblob::default()
        .endpoint(&access.endpoint)
        .account_name(&access.account)
        .container(container)
        .root(&format!("/{prefix}"));
    if let Some(key) = &access.key {
        builder = builder.account_key(key);
    }
    if let Some(sas) = &access.sas {
        builder = builder.sas_token(sas.trim_start_matches('?'));
    }
    let op = Operator::new(builder).map_err(|e| map_err("open", url, e))?;
    Ok(OpendalStore::new(op, url.to_string(), true).with_granter(granter(access, container, prefix)))
}

/// What signs create-only grants for this container, when the access
/// holds the account key (a SAS token cannot sign another).
fn granter(access: &AzureAccess, container: &str, prefix: &str) -> Option<Granter> {
    Some(Granter::Azure {
        endpoint: access.endpoint.clone(),
        account: access.account.clone(),
        key: access.key.clone()?,
        container: container.into(),
        prefix: prefix.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_of_azurite_and_azure_are_read() {
        let azurite = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;";
        let a = parse_connection_string(azurite).expect("azurite");
        assert_eq!(
            (a.endpoint.as_str(), a.account.as_str(), a.key.as_deref()),
            ("http://127.0.0.1:10000/devstoreaccount1", "devstoreaccount1", Some("a2V5"))
        );
        let azure = parse_connection_string(
            "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=k==;EndpointSuffix=core.windows.net",
        )
        .expect("azure");
        assert_eq!(
            (azure.endpoint.as_str(), azure.key.as_deref()),
            ("https://acme.blob.core.windows.net", Some("k=="))
        );
        assert!(parse_connection_string("garbage").is_err());
        assert_eq!(parse_connection_string("UseDevelopmentStorage=true").expect("dev").account, DEV_ACCOUNT);
    }
}
