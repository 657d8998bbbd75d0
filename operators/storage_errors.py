"""Object-store errors sorted into the two kinds that matter: transient (retry) and configuration (stop).

A store that is briefly away (a restart, throttling, a dropped connection) answers again if asked
again; a wrong endpoint, rejected credentials, a missing bucket or a denied action answer the same
forever, and retrying them only delays the one line the user needs. s3fs turns botocore's
``ClientError`` into ``OSError`` subclasses and keeps the original as ``__cause__``;
:func:`error_code` finds the S3 code anywhere in that chain.
"""

from __future__ import annotations

import errno
import os

#: S3 codes that no retry changes: the request is wrong for this store, identity or bucket.
CONFIGURATION_CODES = frozenset({
    "AccessDenied", "AccountProblem", "AllAccessDisabled", "AuthorizationHeaderMalformed", "ExpiredToken",
    "InvalidAccessKeyId", "InvalidBucketName", "InvalidToken", "MethodNotAllowed", "NoSuchBucket", "NotSignedUp",
    "PermanentRedirect", "SignatureDoesNotMatch", "InvalidRequest", "InvalidArgument", "MissingSecurityHeader",
    "InvalidSecurity", "TokenRefreshRequired", "UnauthorizedOperation", "403", "404",
})
#: S3 codes of a store that is overloaded or restarting.
TRANSIENT_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling", "ThrottlingException",
    "RequestLimitExceeded", "OperationAborted", "500", "502", "503", "504",
})
#: What each configuration code means for the user, in their words.
MEANING = {
    "InvalidAccessKeyId": "the store does not know this access key",
    "SignatureDoesNotMatch": "the secret key does not match the access key",
    "AccessDenied": "this identity is not allowed to do that",
    "AllAccessDisabled": "all access to this bucket is disabled",
    "NoSuchBucket": "the bucket does not exist",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is not valid",
    "PermanentRedirect": "the bucket is in another region (set storage.region)",
    "AuthorizationHeaderMalformed": "the request was signed for the wrong region (set storage.region)",
}
# botocore exceptions, by class name (this module stays importable without botocore).
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                   "ProfileNotFound", "NoRegionError", "UnknownCredentialError"}
_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ProxyConnectionError",
                "SSLError", "ClientConnectorError", "ClientConnectorDNSError", "ServerDisconnectedError"}
_TRANSIENT_NAMES = _UNREACHABLE | {"ReadTimeoutError", "HTTPClientError", "IncompleteReadError", "ResponseParserError",
                                   "ClientPayloadError", "FSTimeoutError", "ClientOSError"}


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def error_code(exc: BaseException) -> str | None:
    """The S3 error code (``NoSuchBucket``, ``AccessDenied``, ...) somewhere in ``exc``'s chain, or None."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
    return None


def is_unreachable(exc: BaseException) -> bool:
    """The endpoint did not answer at all (refused, unresolvable, timed out connecting)."""
    return any(_names(e) & _UNREACHABLE or isinstance(e, ConnectionRefusedError) for e in _chain(exc))


def no_credentials(exc: BaseException) -> bool:
    """No credentials were found anywhere in the chain (environment, profile, instance identity)."""
    return any(_names(e) & _NO_CREDENTIALS for e in _chain(exc))


def is_transient(exc: BaseException) -> bool:
    """Whether asking again may succeed.

    Configuration errors (a rejected identity, a missing bucket, a denied action, no credentials, an
    invalid endpoint) and errors of the caller (``ValueError``, ``TypeError``: bad data or code) are
    not; connection failures, timeouts, throttling and 5xx answers are. An unknown ``OSError`` is
    taken as transient, as I/O errors mostly are.
    """
    code = error_code(exc)
    if code in CONFIGURATION_CODES:
        return False
    if code in TRANSIENT_CODES:
        return True
    if no_credentials(exc):
        return False
    for e in _chain(exc):
        if _names(e) & _TRANSIENT_NAMES or isinstance(e, (ConnectionError, TimeoutError)):
            return True
    if isinstance(exc, (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, OSError):
        return exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EACCES, errno.ENOENT)
    return False


def describe(exc: BaseException) -> str:
    """One line on what went wrong, without a traceback: the S3 code and its meaning, or the exception."""
    code = error_code(exc)
    if code:
        meaning = MEANING.get(code)
        return f"{code}: {meaning}" if meaning else f"{code}: {_message(exc)}"
    if no_credentials(exc):
        return ("no credentials found (environment AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, or the "
                "instance or pod identity); storage.anon: true reads a public bucket without them")
    if is_unreachable(exc):
        return f"cannot connect: {_os_reason(exc) or _message(exc)}"
    return f"{type(exc).__name__}: {_message(exc)}"


def _os_reason(exc: BaseException) -> str | None:
    """The operating system's words for the innermost socket error (``Connection refused``), if any."""
    reason = None
    for e in _chain(exc):
        if "Timeout" in type(e).__name__:
            reason = "connection timed out"
        number = getattr(e, "errno", None)
        if isinstance(number, int) and number > 0:
            reason = os.strerror(number)
        elif isinstance(number, int) and getattr(e, "strerror", None):
            reason = str(e.strerror)  # resolver errors (negative numbers): "Name or service not known"
    return reason


def _message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
