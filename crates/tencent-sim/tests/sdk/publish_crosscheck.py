"""Drives the simulator's publishing actions with Tencent Cloud's official Python SDK.

Usage: publish_crosscheck.py HOST:PORT SECRET_ID SECRET_KEY CHAIN_PEM_FILE KEY_PEM_FILE OTHER_KEY_PEM_FILE BOUND_CERT_ID
Uploads the pair (twice: the repeat answers the same id), asks what is bound to BOUND_CERT_ID, moves its
clb (ap-guangzhou) and cdn resources onto the uploaded certificate, polls the deploy record until every
detail is final, retries the failed ones, and deletes: refused for the still-bound new certificate.
Prints one JSON object of what the SDK parsed.
"""

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


def code_of(call):
    try:
        call()
        return None
    except TencentCloudSDKException as err:
        return err.get_code()


def poll(ssl, record_id):
    request = models.DescribeHostUpdateRecordDetailRequest()
    request.DeployRecordId = str(record_id)
    request.Limit = "200"
    for _ in range(10):
        answer = ssl.DescribeHostUpdateRecordDetail(request)
        if answer.RunningTotalCount == 0 and answer.PendingTotalCount == 0:
            return answer
    raise RuntimeError("the deploy record never finished")


def main():
    endpoint, secret_id, secret_key, chain_file, key_file, other_key_file, bound = sys.argv[1:8]
    chain = open(chain_file).read()
    key = open(key_file).read()
    other_key = open(other_key_file).read()
    ssl = client(endpoint, secret_id, secret_key)

    upload = models.UploadCertificateRequest()
    upload.CertificatePublicKey = chain
    upload.CertificatePrivateKey = key
    upload.CertificateType = "SVR"
    upload.Alias = "sdk-crosscheck"
    upload.ProjectId = 0
    tag = models.Tags()
    tag.TagKey = "tco-push-uid"
    tag.TagValue = "sdk-uid-1"
    upload.Tags = [tag]
    upload.Repeatable = False
    first = ssl.UploadCertificate(upload)
    repeat = ssl.UploadCertificate(upload)
    uploaded = first.CertificateId

    mismatch = models.UploadCertificateRequest()
    mismatch.CertificatePublicKey = chain
    mismatch.CertificatePrivateKey = other_key
    mismatch_code = code_of(lambda: ssl.UploadCertificate(mismatch))

    listing = models.DescribeCertificatesRequest()
    listing.Tags = [tag]
    listed = ssl.DescribeCertificates(listing)

    task_request = models.CreateCertificateBindResourceSyncTaskRequest()
    task_request.CertificateIds = [bound]
    task_request.IsCache = 0
    tasks = ssl.CreateCertificateBindResourceSyncTask(task_request)
    result_request = models.DescribeCertificateBindResourceTaskResultRequest()
    result_request.TaskIds = [tasks.CertTaskIds[0].TaskId]
    result = ssl.DescribeCertificateBindResourceTaskResult(result_request).SyncTaskBindResourceResult[0]
    bound_counts = {
        kind.ResourceType: {r.Region: r.TotalCount for r in kind.BindResourceRegionResult}
        for kind in result.BindResourceResult
    }

    no_region = models.UpdateCertificateInstanceRequest()
    no_region.OldCertificateId = bound
    no_region.CertificateId = uploaded
    no_region.ResourceTypes = ["clb"]
    no_region_code = code_of(lambda: ssl.UpdateCertificateInstance(no_region))

    update = models.UpdateCertificateInstanceRequest()
    update.OldCertificateId = bound
    update.CertificateId = uploaded
    update.ResourceTypes = ["clb", "cdn"]
    clb_regions = models.ResourceTypeRegions()
    clb_regions.ResourceType = "clb"
    clb_regions.Regions = ["ap-guangzhou"]
    update.ResourceTypesRegions = [clb_regions]
    started = ssl.UpdateCertificateInstance(update)
    first_run = poll(ssl, started.DeployRecordId)
    failed = [
        (group.ResourceType, item.Status, item.ErrorMsg)
        for group in first_run.RecordDetailList
        for item in group.List
        if item.Status == 2
    ]

    delete_bound = models.DeleteCertificateRequest()
    delete_bound.CertificateId = uploaded
    delete_bound_code = code_of(lambda: ssl.DeleteCertificate(delete_bound))

    retry = models.UpdateCertificateRecordRetryRequest()
    retry.DeployRecordId = started.DeployRecordId
    ssl.UpdateCertificateRecordRetry(retry)
    second_run = poll(ssl, started.DeployRecordId)
    retry_again_code = code_of(lambda: ssl.UpdateCertificateRecordRetry(retry))

    delete_old = models.DeleteCertificateRequest()
    delete_old.CertificateId = bound
    deleted = ssl.DeleteCertificate(delete_old)

    print(json.dumps({
        "uploaded": uploaded,
        "repeat_id": repeat.RepeatCertId,
        "first_repeat_id": first.RepeatCertId,
        "mismatch_code": mismatch_code,
        "listed_ids": [c.CertificateId for c in listed.Certificates],
        "listed_tags": [[(t.TagKey, t.TagValue) for t in c.Tags] for c in listed.Certificates],
        "bind_status": result.Status,
        "bound_counts": bound_counts,
        "no_region_code": no_region_code,
        "deploy_record_id": started.DeployRecordId,
        "deploy_status": started.DeployStatus,
        "first_run": [first_run.TotalCount, first_run.SuccessTotalCount, first_run.FailedTotalCount],
        "first_run_types": sorted(g.ResourceType for g in first_run.RecordDetailList),
        "failed": failed,
        "delete_bound_code": delete_bound_code,
        "second_run": [second_run.TotalCount, second_run.SuccessTotalCount, second_run.FailedTotalCount],
        "retry_again_code": retry_again_code,
        "deleted": deleted.DeleteResult,
    }))


if __name__ == "__main__":
    main()
