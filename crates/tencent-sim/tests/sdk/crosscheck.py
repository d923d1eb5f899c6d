"""Calls the simulator with Tencent Cloud's official Python SDK (tencentcloud-sdk-python-ssl).

Usage: crosscheck.py ENDPOINT_HOST:PORT SECRET_ID SECRET_KEY CERTIFICATE_ID
Prints one JSON object: what the SDK got back, or the SDK error code for a deliberately wrong key.
"""

import base64
import json
import sys

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


def main():
    endpoint, secret_id, secret_key, certificate_id = sys.argv[1:5]
    ok = client(endpoint, secret_id, secret_key)

    download = models.DownloadCertificateRequest()
    download.CertificateId = certificate_id
    answer = ok.DownloadCertificate(download)
    archive = base64.b64decode(answer.Content)

    detail_request = models.DescribeCertificateDetailRequest()
    detail_request.CertificateId = certificate_id
    detail = ok.DescribeCertificateDetail(detail_request)

    listing = models.DescribeCertificatesRequest()
    listing.Limit = 10
    listing.CertificateType = "SVR"
    listing.CertificateStatus = [1]
    tag = models.Tags()
    tag.TagKey = "env"
    tag.TagValue = "prod"
    listing.Tags = [tag]
    listed = ok.DescribeCertificates(listing)

    # The operator's shared lookup: exact ids, no other filter (the renewal is under review).
    by_ids = models.DescribeCertificatesRequest()
    by_ids.CertIds = [certificate_id, "sdkCheck2", "nosuchcert"]
    by_ids.Limit = 3
    looked_up = ok.DescribeCertificates(by_ids)

    try:
        client(endpoint, secret_id, "wrong-" + secret_key).DownloadCertificate(download)
        wrong_key_code = None
    except TencentCloudSDKException as err:
        wrong_key_code = err.get_code()

    try:
        missing = models.DownloadCertificateRequest()
        missing.CertificateId = "nosuchcert"
        ok.DownloadCertificate(missing)
        missing_code = None
    except TencentCloudSDKException as err:
        missing_code = err.get_code()

    print(json.dumps({
        "zip_size": len(archive),
        "zip_magic": archive[:2].decode("latin-1"),
        "content_type": answer.ContentType,
        "request_id": answer.RequestId,
        "status": detail.Status,
        "domain": detail.Domain,
        "cert_end_time": detail.CertEndTime,
        "wrong_key_code": wrong_key_code,
        "missing_code": missing_code,
        "list_total": listed.TotalCount,
        "list_ids": [item.CertificateId for item in listed.Certificates],
        "list_names": [item.SubjectAltName for item in listed.Certificates],
        "list_renew_orders": [item.HasRenewOrder for item in listed.Certificates],
        "list_end_times": [item.CertEndTime for item in listed.Certificates],
        "ids_listed": sorted(item.CertificateId for item in looked_up.Certificates),
        "ids_statuses": sorted(item.Status for item in looked_up.Certificates),
        "ids_renew_orders": sorted(
            (item.CertificateExtra.RenewOrder or "") if item.CertificateExtra else ""
            for item in looked_up.Certificates
        ),
        "ids_begin_times": [item.CertBeginTime for item in looked_up.Certificates],
    }))


if __name__ == "__main__":
    main()
