"""SigV4 verification against signatures botocore makes, and what must be signed."""
import time

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.sagemaker import sigv4
from gateway.sagemaker.credentials import AccessKey

KEYS = {"AKID": "secret"}
BODY = b'{"EndpointName": "x"}'


class Headers(dict):
    def get(self, key, default=None):
        return super().get(key.lower(), default)


def _botocore(headers: dict, service: str = "sagemaker") -> Headers:
    req = AWSRequest(method="POST", url="http://127.0.0.1:8080/", data=BODY, headers=headers)
    SigV4Auth(Credentials("AKID", "secret"), service, "us-east-1").add_auth(req)
    out = Headers({k.lower(): v for k, v in req.headers.items()})
    out["host"] = "127.0.0.1:8080"
    return out


def test_botocores_signature_verifies():
    h = _botocore({"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "SageMaker.DescribeEndpoint"})
    assert sigv4.verify("POST", "/", "", h, BODY, KEYS, "us-east-1", time.time()) == "AKID"


def test_application_auto_scaling_signs_for_its_own_service_and_only_that():
    target = {"Content-Type": "application/x-amz-json-1.1",
              "X-Amz-Target": "AnyScaleFrontendService.DescribeScalableTargets"}
    h = _botocore(target, "application-autoscaling")
    assert sigv4.verify("POST", "/", "", h, BODY, KEYS, "us-east-1", time.time()) == "AKID"
    with pytest.raises(sigv4.AuthError, match="'application-autoscaling'"):       # signed for another API
        sigv4.verify("POST", "/", "", _botocore(target), BODY, KEYS, "us-east-1", time.time())
    with pytest.raises(sigv4.AuthError, match="'sagemaker'"):
        sigv4.verify("POST", "/", "", _botocore({"X-Amz-Target": "SageMaker.ListModels"}, "application-autoscaling"),
                     BODY, KEYS, "us-east-1", time.time())
    with pytest.raises(sigv4.AuthError, match="'sagemaker'"):      # the runtime's paths are SageMaker's, whatever
        sigv4.verify("POST", "/endpoints/x/invocations", "", h, BODY, KEYS, "us-east-1", time.time())


def test_an_operation_that_was_not_signed_cannot_be_added_to_a_captured_request():
    h = _botocore({"Content-Type": "application/x-amz-json-1.1"})      # X-Amz-Target left out of the signature
    h["x-amz-target"] = "SageMaker.DeleteEndpoint"
    with pytest.raises(sigv4.AuthError) as err:
        sigv4.verify("POST", "/", "", h, BODY, KEYS, "us-east-1", time.time())
    assert err.value.code == "InvalidSignatureException" and "x-amz-target header must be signed" in err.value.message


def test_our_signer_and_verifier_agree_and_cover_every_header_given():
    key = AccessKey("AKID", "secret")
    h = sigv4.sign_url("POST", "http://127.0.0.1:8080/endpoints/a%20b/invocations", BODY, key, "us-east-1",
                       {"Content-Type": "application/json", "X-Amz-Target": "x"})
    hh = Headers({k.lower(): v for k, v in h.items()})
    assert sigv4.verify("POST", "/endpoints/a b/invocations", "", hh, BODY, KEYS, "us-east-1", time.time()) == "AKID"
    hh["content-type"] = "text/csv"
    with pytest.raises(sigv4.AuthError, match="does not match"):
        sigv4.verify("POST", "/endpoints/a b/invocations", "", hh, BODY, KEYS, "us-east-1", time.time())


def test_a_signed_request_cannot_carry_another_body():
    """The payload hash is computed from the body received, never taken from the client."""
    import hashlib

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from gateway.sagemaker.sigv4 import AuthError, verify

    body = b'{"EndpointName": "harmless"}'
    req = AWSRequest(method="POST", url="http://127.0.0.1:8080/", data=body,
                     headers={"Content-Type": "application/x-amz-json-1.1",
                              "X-Amz-Target": "SageMaker.DeleteEndpoint"})
    SigV4Auth(Credentials("AKID", "secret"), "sagemaker", "us-east-1").add_auth(req)
    headers = {k.lower(): v for k, v in req.headers.items()}
    headers["host"] = "127.0.0.1:8080"

    class H(dict):
        def get(self, key, default=None):
            return super().get(key.lower(), default)

    now = time.time()
    keys = {"AKID": "secret"}
    assert verify("POST", "/", "", H(headers), body, keys, "us-east-1", now) == "AKID"
    swapped = b'{"EndpointName": "production"}'
    with pytest.raises(AuthError, match="signature"):
        verify("POST", "/", "", H(headers), swapped, keys, "us-east-1", now)
    forged = H(headers, **{"x-amz-content-sha256": hashlib.sha256(body).hexdigest()})
    with pytest.raises(AuthError):
        verify("POST", "/", "", forged, swapped, keys, "us-east-1", now)
