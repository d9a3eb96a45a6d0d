"""One-line errors for S3 and SQS failures of ``ctr`` commands, in place of botocore tracebacks.

``aws_errors`` maps the botocore exceptions that mean "this machine is not
set up for that environment" to ``AwsSetupError`` with the settings to
change. Errors that the services return (``ClientError``: a missing bucket,
access denied) become ``AwsRequestError`` with AWS's code and message.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator

from ctr_inference.errors import CtrError


class AwsSetupError(CtrError):
    """S3 or SQS cannot be reached: no credentials, no region, or no server at the endpoint."""


class AwsRequestError(CtrError):
    """S3 or SQS rejected a request."""


def _server(url: str) -> str:
    """Return the scheme and host of a request URL, without the path and query."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


@contextlib.contextmanager
def aws_errors(hint: str = "") -> Iterator[None]:
    """Turn botocore's credential, region, connection and service errors into one-line ``CtrError``s.

    ``hint`` is added to the messages of setup errors.

    Raises:
        AwsSetupError: no credentials, no region, or no server responds at the endpoint.
        AwsRequestError: the service returned an error.
    """
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    hint = f"; {hint}" if hint else ""
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError) as error:
        raise AwsSetupError(
            f"no complete AWS credentials found ({error}): set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (any values for a local S3/SQS server, with AWS_ENDPOINT_URL set to its "
            f"URL){hint}") from error
    except NoRegionError as error:
        raise AwsSetupError(f"no AWS region configured: set AWS_DEFAULT_REGION, for example us-east-1{hint}") from error
    except EndpointConnectionError as error:
        server = _server(str(error.kwargs.get("endpoint_url", "")))
        raise AwsSetupError(
            f"could not connect to S3/SQS at {server}: start the server there or set AWS_ENDPOINT_URL to "
            f"a running one{hint}") from error
    except ClientError as error:
        details = error.response.get("Error", {})
        raise AwsRequestError(
            f"{error.operation_name} failed with {details.get('Code', 'an error')}: "
            f"{details.get('Message', error)}") from error
