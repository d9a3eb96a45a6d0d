"""Ask an image registry whether an image exists, for its digest and its labels, and tag it.

Two kinds of registry are supported:

- any registry that implements the OCI distribution API (``/v2/``), such as
  the Debian ``docker-registry`` on 127.0.0.1, with anonymous bearer tokens
  when the registry requires them. Hosts on the loopback interface are spoken to
  over plain HTTP, every other host over HTTPS;
- Amazon ECR (``<account>.dkr.ecr.<region>.amazonaws.com``), through boto3 and
  the caller's AWS credentials.

``RegistryUnavailableError`` means "could not ask", never "the image is
missing": callers decide whether they can go on without an answer.

``add_tag`` gives an image one more tag without pulling it. ``ctr deploy
promote`` uses it to mark every image it pins in an overlay with
``promoted-<tag>``, the tag that the ECR lifecycle policy in
``terraform/modules/registry`` keeps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from ctr.deploy.errors import (
    ImageNotFoundError,
    ImageReferenceError,
    ImageTagConflictError,
    RegistryUnavailableError,
)
from ctr.deploy.images import ImageReference, is_valid_tag

logger = logging.getLogger(__name__)

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[0], MANIFEST_TYPES[2]
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# Prefix of the tag that a promotion adds. It must equal promoted_tag_prefix
# of terraform/modules/registry, whose lifecycle policy keeps the newest images
# with such a tag and expires other tagged images by age (a test compares them).
PROMOTED_TAG_PREFIX = "promoted-"
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

    def add_tag(self, image: ImageReference, tag: str) -> None:
        """Point ``tag`` at the manifest that ``image``'s digest names, in the same repository.

        The manifest is uploaded again byte for byte under the new tag, so the
        digest does not change and no layer is copied. Tagging an image again
        with a tag it already has changes nothing.

        Raises:
            ImageReferenceError: the image has no digest, or ``tag`` is not a valid tag.
            ImageNotFoundError: the registry has no manifest with the image's digest.
            ImageTagConflictError: the registry keeps tags immutable and ``tag`` names
                another image already.
            RegistryUnavailableError: the registry could not be asked, or refused the upload.
        """
        if not image.digest:
            raise ImageReferenceError(f"image {image} needs a digest to be tagged")
        if not is_valid_tag(tag):
            raise ImageReferenceError(f"invalid tag {tag!r} for {image.name}: at most 128 letters, "
                                      "digits, '_', '.' and '-', not starting with '.' or '-'")
        if not image.registry:
            raise RegistryUnavailableError(f"image {image} names no registry host")
        if _ECR_HOST.match(image.registry):
            self._ecr_add_tag(image, tag)
            return

        body, headers = self._get_manifest(image, image.digest)
        if "sha256:" + hashlib.sha256(body).hexdigest() != image.digest:
            raise RegistryUnavailableError(f"registry {image.registry} returned a manifest whose "
                                           f"digest is not {image.digest}")
        media_type = _header(headers, "Content-Type") or json.loads(body).get("mediaType", "")
        if media_type not in MANIFEST_TYPES:
            raise RegistryUnavailableError(f"manifest of {image} has the unsupported media type "
                                           f"{media_type!r}")
        self._request(image, f"/v2/{image.repository}/manifests/{tag}", method="PUT", data=body,
                      content_type=media_type)
        logger.info("tagged %s as %s", image, tag)

    # OCI distribution API -------------------------------------------------------

    def _get_manifest(self, image: ImageReference, reference: str, method: str = "GET"):
        if not reference:
            raise ImageReferenceError(f"image {image} has neither a tag nor a digest")
        return self._request(image, f"/v2/{image.repository}/manifests/{reference}", method=method,
                             accept=", ".join(MANIFEST_TYPES))

    def _request(self, image: ImageReference, path: str, method: str = "GET", accept: str = "",
                 token: str = "", data: bytes | None = None,
                 content_type: str = "") -> tuple[bytes, dict]:
        scheme = "http" if _is_loopback(image.registry) else "https"
        url = f"{scheme}://{image.registry}{path}"
        request = urllib.request.Request(url, data=data, method=method)
        if accept:
            request.add_header("Accept", accept)
        if content_type:
            request.add_header("Content-Type", content_type)
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
                return self._request(image, path, method, accept, token, data, content_type)
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

    def _ecr_client(self, image: ImageReference):
        import boto3

        return boto3.client("ecr", region_name=_ECR_HOST.match(image.registry).group("region"))

    def _ecr_digest(self, image: ImageReference) -> str:
        import botocore.exceptions

        match = _ECR_HOST.match(image.registry)
        client = self._ecr_client(image)
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

    def _ecr_add_tag(self, image: ImageReference, tag: str) -> None:
        """Tag an ECR image with BatchGetImage and PutImage; ECR's API has no call that only tags.

        ECR accepts a new tag on an existing digest even in a repository with
        immutable tags; only moving an existing tag is refused.
        NOTE: tested against moto's ECR emulation only, not against ECR itself.
        """
        import botocore.exceptions

        account = _ECR_HOST.match(image.registry).group("account")
        client = self._ecr_client(image)
        try:
            found = client.batch_get_image(registryId=account, repositoryName=image.repository,
                                           imageIds=[{"imageDigest": image.digest}],
                                           acceptedMediaTypes=list(MANIFEST_TYPES))
            if not found["images"]:
                failures = "; ".join(f.get("failureReason", "?") for f in found.get("failures", []))
                raise ImageNotFoundError(f"ECR repository {image.repository} has no {image}: "
                                         f"{failures}")
            manifest = found["images"][0]
            arguments = {"imageManifestMediaType": manifest["imageManifestMediaType"]} \
                if manifest.get("imageManifestMediaType") else {}
            client.put_image(registryId=account, repositoryName=image.repository,
                             imageManifest=manifest["imageManifest"], imageTag=tag,
                             imageDigest=image.digest, **arguments)
        except client.exceptions.ImageAlreadyExistsException:
            logger.info("%s already has the tag %s", image, tag)
            return
        except client.exceptions.ImageTagAlreadyExistsException as error:
            raise ImageTagConflictError(f"ECR repository {image.repository} keeps tags immutable "
                                        f"and {tag} already names another image") from error
        except client.exceptions.RepositoryNotFoundException as error:
            raise ImageNotFoundError(f"ECR repository {image.repository} does not exist") from error
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise RegistryUnavailableError(f"cannot tag {image} as {tag} in ECR: {error}") from error
        logger.info("tagged %s as %s", image, tag)


def promoted_tag(image: ImageReference) -> str:
    """Return the tag that marks ``image`` as promoted: ``promoted-<its tag>``.

    Raises:
        ImageReferenceError: the image has no tag.
    """
    if not image.tag:
        raise ImageReferenceError(f"image {image} has no tag to derive the promoted tag from")
    return PROMOTED_TAG_PREFIX + image.tag


def _header(headers: dict, name: str) -> str:
    """Return a response header by case-insensitive name, without parameters such as charset."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value.split(";", 1)[0].strip()
    return ""


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
