//! `ApplyCertificate`'s parameters, checked as Tencent does (the codes are the SDK's).

use serde_json::{Map, Value};

use super::{Refusal, refuse};
use tencent_ssl::apply::{DvAuthMethod, FREE_VALIDITY_MONTHS, PACKAGE_TYPE_FREE_DV};

/// Every `ApplyCertificate` parameter the SDK (3.1.145) knows.
const KNOWN_PARAMETERS: &[&str] = &[
    "DvAuthMethod",
    "DomainName",
    "ProjectId",
    "PackageType",
    "ContactEmail",
    "ContactPhone",
    "ValidityPeriod",
    "CsrEncryptAlgo",
    "CsrKeyParameter",
    "CsrKeyPassword",
    "Alias",
    "OldCertificateId",
    "PackageId",
    "DeleteDnsAutoRecord",
    "DnsNames",
];

fn is_valid_domain(domain: &str) -> bool {
    let name = domain.strip_prefix("*.").unwrap_or(domain);
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The validated parameters of one application.
pub(super) struct Application {
    pub(super) method: DvAuthMethod,
    pub(super) domain: String,
    pub(super) old: Option<String>,
    pub(super) alias: Option<String>,
    pub(super) project_id: Option<u64>,
    pub(super) rsa: bool,
}

fn text<'a>(params: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, Refusal> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.as_str()).filter(|t| !t.is_empty())),
        Some(_) => Err(refuse(
            "InvalidParameter",
            format!("The parameter `{name}` must be a string."),
        )),
    }
}

pub(super) fn parse(params: &Value) -> Result<Application, Refusal> {
    let Value::Object(params) = params else {
        return Err(refuse("InvalidParameter", "The body is not a JSON object."));
    };
    if let Some(name) = params
        .keys()
        .find(|name| !KNOWN_PARAMETERS.contains(&name.as_str()))
    {
        return Err(refuse(
            "UnknownParameter",
            format!("The parameter `{name}` is not recognized."),
        ));
    }
    let required = |name: &str| {
        text(params, name)?.ok_or_else(|| {
            refuse(
                "MissingParameter",
                format!("The request is missing a required parameter `{name}`."),
            )
        })
    };
    let method: DvAuthMethod = required("DvAuthMethod")?
        .parse()
        .map_err(|why: String| refuse("InvalidParameterValue", why))?;
    let domain = required("DomainName")?.trim().to_ascii_lowercase();
    if domain.len() > 64 {
        return Err(refuse(
            "InvalidParameterValue.CertificateDomainMaxLengthInvalid",
            "证书域名过长： 域名不能超过64位，请您重新输入",
        ));
    }
    if !is_valid_domain(&domain) {
        return Err(refuse(
            "InvalidParameter.DomainInvalid",
            "域名无效，请重新输入。",
        ));
    }
    if let Some(package) = text(params, "PackageType")?
        && package != PACKAGE_TYPE_FREE_DV
    {
        return Err(refuse(
            "InvalidParameterValue",
            format!("PackageType {package:?} is not supported: only 83 (TrustAsia C1 DV Free)."),
        ));
    }
    if let Some(period) = text(params, "ValidityPeriod")?
        && period != FREE_VALIDITY_MONTHS
    {
        return Err(refuse("InvalidParameter.PeriodInvalid", "证书期限无效。"));
    }
    let algorithm = text(params, "CsrEncryptAlgo")?.unwrap_or("RSA");
    let key_parameter = text(params, "CsrKeyParameter")?;
    let rsa = match (algorithm, key_parameter) {
        ("RSA", None | Some("2048")) => true,
        ("ECC", Some("prime256v1")) => false,
        _ => {
            return Err(refuse(
                "InvalidParameter.RenewAlgorithmInvalid",
                "算法无效。",
            ));
        }
    };
    if params
        .get("DnsNames")
        .and_then(Value::as_array)
        .is_some_and(|names| !names.is_empty())
    {
        return Err(refuse(
            "InvalidParameter",
            "DnsNames is not supported yet (待开放).",
        ));
    }
    let project_id = match params.get("ProjectId") {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.as_u64().ok_or_else(|| {
            refuse(
                "InvalidParameter",
                "The parameter `ProjectId` must be an integer.",
            )
        })?),
    };
    Ok(Application {
        method,
        domain,
        old: text(params, "OldCertificateId")?.map(String::from),
        alias: text(params, "Alias")?.map(String::from),
        project_id,
        rsa,
    })
}
