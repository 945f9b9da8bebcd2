"""Who a bearer token belongs to, asked of the API server (``TokenReview``).

The answer echoes the token back in ``spec``, so nothing here logs or keeps
a response body: only the reviewed user is returned.
"""

from __future__ import annotations

import msgspec

from podindex.kube.client import KubeClient
from podindex.kube.errors import KubeError

PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


class ReviewedUser(msgspec.Struct, frozen=True):
    username: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()


class _ReviewStatus(msgspec.Struct):
    authenticated: bool = False
    user: ReviewedUser = msgspec.field(default_factory=ReviewedUser)


class _Review(msgspec.Struct):
    status: _ReviewStatus = msgspec.field(default_factory=_ReviewStatus)


_decoder = msgspec.json.Decoder(_Review)


async def review_token(client: KubeClient, token: str) -> ReviewedUser | None:
    """The user ``token`` authenticates as, or None when the API server does not accept it.

    Raises :class:`~podindex.kube.errors.KubeError` when the question cannot
    be asked (unreachable, podindex itself not allowed to create reviews).
    """
    body = msgspec.json.encode(
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
    )
    try:
        review = _decoder.decode(await client.post(PATH, body))
    except msgspec.DecodeError as exc:
        raise KubeError(
            f"TokenReview: the API server's answer is not a TokenReview ({exc})"
        ) from None
    return review.status.user if review.status.authenticated else None
