"""Calls the simulator's STS with Tencent Cloud's official Python SDK (tencentcloud-sdk-python-sts and the
common package's own credential providers), then downloads with the temporary credentials it got.

Usage: sts_crosscheck.py ENDPOINT_HOST:PORT SECRET_ID SECRET_KEY ROLE_ARN UNTRUSTED_ROLE_ARN PROVIDER_ID
       TOKEN_FILE CERTIFICATE_ID
Prints one JSON object.
"""

import base64
import json
import os
import sys

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.ssl.v20191205 import models as ssl_models, ssl_client
from tencentcloud.sts.v20180813 import models as sts_models, sts_client


class PlainHttpProfile(HttpProfile):
    """The SDK's credential providers build their own HttpProfile (https); the simulator speaks http."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("protocol", "http")
        super().__init__(*args, **kwargs)


credential.HttpProfile = PlainHttpProfile


def profile(endpoint):
    return ClientProfile(httpProfile=PlainHttpProfile(endpoint=endpoint), language="en-US")


def download(endpoint, cred, certificate_id):
    request = ssl_models.DownloadCertificateRequest()
    request.CertificateId = certificate_id
    answer = ssl_client.SslClient(cred, "", profile(endpoint)).DownloadCertificate(request)
    return len(base64.b64decode(answer.Content))


def code_of(call):
    try:
        call()
        return None
    except TencentCloudSDKException as err:
        return err.get_code()


def main():
    (endpoint, secret_id, secret_key, role_arn, untrusted_arn, provider_id, token_file,
     certificate_id) = sys.argv[1:9]

    # StsClient.AssumeRole, signed with the base key: the response model's fields.
    sts = sts_client.StsClient(credential.Credential(secret_id, secret_key), "ap-guangzhou",
                               profile(endpoint))
    request = sts_models.AssumeRoleRequest()
    request.RoleArn = role_arn
    request.RoleSessionName = "sdk-crosscheck"
    request.DurationSeconds = 900
    assumed = sts.AssumeRole(request)

    # The SDK's own providers: STSAssumeRoleCredential and, from the TKE variables, the OIDC provider.
    role_cred = credential.STSAssumeRoleCredential(secret_id, secret_key, role_arn, "sdk-crosscheck",
                                                   900, endpoint=endpoint)
    role_download = download(endpoint, role_cred, certificate_id)

    os.environ.update({
        "TKE_REGION": "ap-guangzhou",
        "TKE_PROVIDER_ID": provider_id,
        "TKE_WEB_IDENTITY_TOKEN_FILE": token_file,
        "TKE_ROLE_ARN": role_arn,
    })
    oidc_cred = credential.DefaultTkeOIDCRoleArnProvider().get_credentials()
    oidc_cred.endpoint = endpoint
    oidc_download = download(endpoint, oidc_cred, certificate_id)

    untrusted = credential.STSAssumeRoleCredential(secret_id, secret_key, untrusted_arn, "sdk-crosscheck",
                                                   900, endpoint=endpoint)
    untrusted_code = code_of(lambda: untrusted.get_credential_info())
    missing = credential.STSAssumeRoleCredential(secret_id, secret_key, role_arn + "-typo",
                                                 "sdk-crosscheck", 900, endpoint=endpoint)
    missing_code = code_of(lambda: missing.get_credential_info())
    with open(token_file, "w") as f:
        f.write("not-a-token-the-provider-vouches-for")
    stale = credential.DefaultTkeOIDCRoleArnProvider().get_credentials()
    stale.endpoint = endpoint
    stale_code = code_of(lambda: stale.get_credential_info())

    # Temporary credentials without their token are refused by the SSL API.
    tmp_id, tmp_key, _ = role_cred.get_credential_info()
    tokenless_code = code_of(lambda: download(endpoint, credential.Credential(tmp_id, tmp_key),
                                              certificate_id))

    print(json.dumps({
        "assume_role_tmp_id_prefix": assumed.Credentials.TmpSecretId[:7],
        "assume_role_token_len": len(assumed.Credentials.Token),
        "assume_role_expired_time": assumed.ExpiredTime,
        "assume_role_expiration": assumed.Expiration,
        "role_download": role_download,
        "oidc_download": oidc_download,
        "untrusted_code": untrusted_code,
        "missing_code": missing_code,
        "stale_token_code": stale_code,
        "tokenless_code": tokenless_code,
    }))


if __name__ == "__main__":
    main()
