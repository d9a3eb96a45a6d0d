"""Ask an image registry whether an image exists, for its digest and for its labels.

Two kinds of registry are supported:

- any registry that implements the OCI distribution API (``/v2/``), such as
  the Debian ``docker-registry`` on 127.0.0.1, with anonymous bearer tokens
  when the registry requires them. Hosts on the loopback interface are spoken to
  over plain HTTP, every other host over HTTPS;
- Amazon ECR (``<account>.dkr.ecr.<region>.amazonaws.com``), through boto3 and
  the caller's AWS credentials.

``RegistryUnavailableError`` means "could not ask", never "the image is
missing": callers decide whether they can go on without an answer.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from ctr.deploy.errors import ImageNotFoundError, ImageReferenceError, RegistryUnavailableError
from ctr.deploy.images import ImageReference

logger = logging.getLogger(__name__)

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[0], MANIFEST_TYPES[2]
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_ECR_HOST = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


@dataclass
class RegistryClient:
    """Reads manifests and image configs; ``timeout`` is per HTTP request, in seconds."""

    timeout: float = 10.0

    def resolve_digest(self, image: ImageReference) -> str:
        """Return the digest that the image's tag (or digest) points to.

        Raises:
            ImageNotFoundError: the registry has no such image.
            RegistryUnavailableError: the registry could not be asked.
        """
        if not image.registry:
            raise RegistryUnavailableError(f"image {image} names no registry host")
        if _ECR_HOST.match(image.registry):
            return self._ecr_digest(image)
        _, headers = self._get_manifest(image, image.digest or image.tag, method="HEAD")
        digest = headers.get("Docker-Content-Digest", "")
        if not digest:
            # Some registries omit the header on HEAD; the body's hash is the digest.
            import hashlib

            body, _ = self._get_manifest(image, image.digest or image.tag)
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
        return digest

    def image_exists(self, image: ImageReference) -> bool:
        """Return True when the registry has the image (by digest when it has one).

        Raises:
            RegistryUnavailableError: the registry could not be asked.
        """
        try:
            digest = self.resolve_digest(image)
        except ImageNotFoundError:
            return False
        return not image.digest or digest == image.digest

    def labels(self, image: ImageReference) -> dict[str, str]:
        """Return the image config's labels (of the linux/amd64 image of an index).

        Raises:
            ImageNotFoundError: the registry has no such image.
            RegistryUnavailableError: the registry could not be asked, or is ECR, whose
                blobs this client does not read.
        """
        if _ECR_HOST.match(image.registry or ""):
            raise RegistryUnavailableError(f"reading labels from ECR is not supported ({image})")
        body, headers = self._get_manifest(image, image.digest or image.tag)
        manifest = json.loads(body)
        if manifest.get("mediaType", headers.get("Content-Type", "")) in INDEX_TYPES:
            chosen = _platform_manifest(manifest, image)
            body, _ = self._get_manifest(image, chosen["digest"])
            manifest = json.loads(body)
        config_digest = manifest.get("config", {}).get("digest")
        if not config_digest:
            raise RegistryUnavailableError(f"manifest of {image} has no config blob")
        config = json.loads(self._request(image, f"/v2/{image.repository}/blobs/{config_digest}")[0])
        return dict(config.get("config", {}).get("Labels") or {})

    # OCI distribution API -------------------------------------------------------

    def _get_manifest(self, image: ImageReference, reference: str, method: str = "GET"):
        if not reference:
            raise ImageReferenceError(f"image {image} has neither a tag nor a digest")
        return self._request(image, f"/v2/{image.repository}/manifests/{reference}", method=method,
                             accept=", ".join(MANIFEST_TYPES))

    def _request(self, image: ImageReference, path: str, method: str = "GET", accept: str = "",
                 token: str = "") -> tuple[bytes, dict]:
        scheme = "http" if _is_loopback(image.registry) else "https"
        url = f"{scheme}://{image.registry}{path}"
        request = urllib.request.Request(url, method=method)
        if accept:
            request.add_header("Accept", accept)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read(), dict(response.headers.items())
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise ImageNotFoundError(f"registry {image.registry} has no {image}") from error
            challenge = error.headers.get("WWW-Authenticate", "")
            if error.code == 401 and not token and challenge.lower().startswith("bearer "):
                token = self._anonymous_token(challenge, image)
                return self._request(image, path, method, accept, token)
            raise RegistryUnavailableError(
                f"registry {image.registry} returned {error.code} {error.reason} for {url}"
            ) from error
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise RegistryUnavailableError(f"cannot reach registry {image.registry}: {reason}") from error

    def _anonymous_token(self, challenge: str, image: ImageReference) -> str:
        """Fetch an anonymous pull token from the realm named in a ``WWW-Authenticate`` challenge."""
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = fields.pop("realm", "")
        if not realm:
            raise RegistryUnavailableError(f"registry {image.registry} asks for a token without a realm")
        fields.setdefault("scope", f"repository:{image.repository}:pull")
        url = f"{realm}?{urllib.parse.urlencode(fields)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                document = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise RegistryUnavailableError(
                f"registry {image.registry} requires authentication and no anonymous token was "
                f"issued: {error}") from error
        token = document.get("token") or document.get("access_token")
        if not token:
            raise RegistryUnavailableError(f"token service {realm} returned no token")
        return token

    # Amazon ECR -----------------------------------------------------------------

    def _ecr_digest(self, image: ImageReference) -> str:
        import boto3
        import botocore.exceptions

        match = _ECR_HOST.match(image.registry)
        client = boto3.client("ecr", region_name=match.group("region"))
        image_id = {"imageDigest": image.digest} if image.digest else {"imageTag": image.tag}
        try:
            response = client.describe_images(registryId=match.group("account"),
                                              repositoryName=image.repository, imageIds=[image_id])
        except client.exceptions.ImageNotFoundException as error:
            raise ImageNotFoundError(f"ECR repository {image.repository} has no {image}") from error
        except client.exceptions.RepositoryNotFoundException as error:
            raise ImageNotFoundError(f"ECR repository {image.repository} does not exist") from error
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise RegistryUnavailableError(f"cannot query ECR for {image}: {error}") from error
        return response["imageDetails"][0]["imageDigest"]


def _is_loopback(registry: str) -> bool:
    """Tell whether a registry host (with an optional port) is on the loopback interface."""
    host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
    return host in LOOPBACK_HOSTS


def _platform_manifest(index: dict, image: ImageReference) -> dict:
    """Return the linux/amd64 entry of an image index (the only entry if there is one)."""
    manifests = index.get("manifests", [])
    for entry in manifests:
        platform = entry.get("platform", {})
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return entry
    if len(manifests) == 1:
        return manifests[0]
    raise RegistryUnavailableError(f"image index of {image} has no linux/amd64 image")
