"""Drives ApplyCertificate and the validation life cycle at the simulator with Tencent Cloud's official
Python SDK (tencentcloud-sdk-python-ssl): the SDK's own request models and response parsing.

Usage: apply_crosscheck.py HOST:PORT SECRET_ID SECRET_KEY OLD_DNS OLD_AUTO PAID EARLY DOMAIN_DNS DOMAIN_AUTO
Prints one JSON object with what the SDK read. Uses the simulator's control endpoints (plain HTTP) to say
"the DNS record now exists" and to exhaust the free quota.
"""

import json
import sys
import urllib.request

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.ssl.v20191205 import models, ssl_client


def client(endpoint, secret_id, secret_key):
    http = HttpProfile(endpoint=endpoint, protocol="http")
    http.scheme = "http"
    profile = ClientProfile(httpProfile=http, language="en-US")
    return ssl_client.SslClient(credential.Credential(secret_id, secret_key), "", profile)


def control(endpoint, path, body):
    request = urllib.request.Request(
        "http://%s%s" % (endpoint, path),
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as answer:
        return json.loads(answer.read())


def apply_request(method, domain, old):
    request = models.ApplyCertificateRequest()
    request.DvAuthMethod = method
    request.DomainName = domain
    request.OldCertificateId = old
    request.PackageType = "83"
    request.ValidityPeriod = "3"
    request.CsrEncryptAlgo = "ECC"
    request.CsrKeyParameter = "prime256v1"
    return request


def error_code(call):
    try:
        call()
        return None
    except TencentCloudSDKException as err:
        return err.get_code()


def detail(ssl, certificate_id):
    request = models.DescribeCertificateDetailRequest()
    request.CertificateId = certificate_id
    return ssl.DescribeCertificateDetail(request)


def main():
    endpoint, secret_id, secret_key, old_dns, old_auto, paid, early, domain_dns, domain_auto = sys.argv[1:10]
    ssl = client(endpoint, secret_id, secret_key)

    applied = ssl.ApplyCertificate(apply_request("DNS", domain_dns, old_dns))
    new_id = applied.CertificateId
    pending = detail(ssl, new_id)
    auth = pending.DvAuthDetail
    listing = models.DescribeCertificatesRequest()
    listing.CertIds = [old_dns, new_id]
    listing.Limit = 2
    listed = {item.CertificateId: item for item in ssl.DescribeCertificates(listing).Certificates}
    second_code = error_code(lambda: ssl.ApplyCertificate(apply_request("DNS", domain_dns, old_dns)))

    validated = control(endpoint, "/_sim/orders/%s/validate" % new_id, {})
    issued = detail(ssl, new_id)
    download = models.DownloadCertificateRequest()
    download.CertificateId = new_id
    archive_size = len(ssl.DownloadCertificate(download).Content or "")

    auto = ssl.ApplyCertificate(apply_request("DNS_AUTO", domain_auto, old_auto))
    auto_detail = detail(ssl, auto.CertificateId)

    paid_code = error_code(lambda: ssl.ApplyCertificate(apply_request("DNS", "paid.example.com", paid)))
    early_code = error_code(lambda: ssl.ApplyCertificate(apply_request("DNS", "early.example.com", early)))
    bad_method_code = error_code(lambda: ssl.ApplyCertificate(apply_request("EMAIL", domain_dns, None)))
    control(endpoint, "/_sim/apply/settings", {"free_quota": 0})
    quota_code = error_code(lambda: ssl.ApplyCertificate(apply_request("DNS", "fresh.example.com", None)))

    print(json.dumps({
        "new_id": new_id,
        "applied_request_id": applied.RequestId,
        "pending_status": pending.Status,
        "pending_verify_type": pending.VerifyType,
        "pending_status_msg": pending.StatusMsg,
        "pending_package_type": pending.PackageType,
        "pending_is_vip": pending.IsVip,
        "pending_origin": pending.CertificateExtra.OriginCertificateId if pending.CertificateExtra else None,
        "auth_key": auth.DvAuthKey if auth else None,
        "auth_value": auth.DvAuthValue if auth else None,
        "auth_domain": auth.DvAuthDomain if auth else None,
        "auth_sub_domain": auth.DvAuthKeySubDomain if auth else None,
        "auths": [
            {"key": a.DvAuthKey, "value": a.DvAuthValue, "type": a.DvAuthVerifyType, "sub": a.DvAuthSubDomain}
            for a in (auth.DvAuths or [])
        ] if auth else [],
        "old_has_renew_order": listed[old_dns].HasRenewOrder,
        "old_renew_order": listed[old_dns].CertificateExtra.RenewOrder,
        "new_listed_status": listed[new_id].Status,
        "new_listed_verify_type": listed[new_id].VerifyType,
        "second_code": second_code,
        "validated_state": validated["state"],
        "issued_status": issued.Status,
        "issued_auth": None if issued.DvAuthDetail is None else issued.DvAuthDetail.DvAuthKey,
        "archive_base64_len": archive_size,
        "auto_status": auto_detail.Status,
        "auto_verify_type": auto_detail.VerifyType,
        "auto_origin": auto_detail.CertificateExtra.OriginCertificateId,
        "paid_code": paid_code,
        "early_code": early_code,
        "bad_method_code": bad_method_code,
        "quota_code": quota_code,
    }))


if __name__ == "__main__":
    main()
