"""Account writes, one module per idea.

- :mod:`~accounts.services.users`: registration, login, profile changes, deletion;
- :mod:`~accounts.services.sessions`: opening, ending and purging login sessions;
- :mod:`~accounts.services.api_keys`: issuing and revoking API keys;
- :mod:`~accounts.services.balance`: the token balance and the price multiplier,
  charged, refunded, granted and set only here;
- :mod:`~accounts.services.throttles`: the password guard (failed password checks
  per account and address, and per address) and the registrations per address.

Callers import the public names from ``accounts.services``.
"""

from __future__ import annotations

from accounts.services.api_keys import TOKEN_NAME_MESSAGE, api_key_create, api_key_revoke
from accounts.services.balance import (
    PRICE_MULTIPLIER_MAX,
    TOKEN_BALANCE_MAX,
    InsufficientBalance,
    balance_charge,
    balance_grant,
    balance_refund,
    balance_set,
    price_multiplier_clean,
    price_multiplier_set,
    token_balance_validate,
)
from accounts.services.sessions import PurgeResult, session_create, session_end, session_purge
from accounts.services.throttles import (
    LOGIN_BLOCKED_MESSAGE,
    PASSWORD_BLOCKED_MESSAGE,
    REGISTRATION_BLOCKED_MESSAGE,
    PasswordAttempt,
    password_attempt_begin,
)
from accounts.services.users import (
    PASSWORD_MAX_LENGTH,
    PASSWORD_MIN_LENGTH,
    USERNAME_MESSAGE,
    password_confirm,
    password_validate,
    user_delete,
    user_get_by_username,
    user_login,
    user_register,
    user_update,
    username_validate,
)

__all__ = [
    "LOGIN_BLOCKED_MESSAGE",
    "PASSWORD_BLOCKED_MESSAGE",
    "PASSWORD_MAX_LENGTH",
    "PASSWORD_MIN_LENGTH",
    "PRICE_MULTIPLIER_MAX",
    "REGISTRATION_BLOCKED_MESSAGE",
    "TOKEN_BALANCE_MAX",
    "TOKEN_NAME_MESSAGE",
    "USERNAME_MESSAGE",
    "InsufficientBalance",
    "PasswordAttempt",
    "PurgeResult",
    "api_key_create",
    "api_key_revoke",
    "balance_charge",
    "balance_grant",
    "balance_refund",
    "balance_set",
    "password_attempt_begin",
    "password_confirm",
    "password_validate",
    "price_multiplier_clean",
    "price_multiplier_set",
    "session_create",
    "session_end",
    "session_purge",
    "token_balance_validate",
    "user_delete",
    "user_get_by_username",
    "user_login",
    "user_register",
    "user_update",
    "username_validate",
]
