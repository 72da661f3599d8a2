-- Consumer credentials of the auth plugins (Kong's keyauth_credentials, basicauth_credentials
-- and acls). They go with their consumer, as in Kong (ON DELETE CASCADE). The unique columns
-- are Kong's: a key, a username, and one group per consumer (acls.cache_key).

CREATE TABLE keyauth_credentials (
    id          TEXT PRIMARY KEY NOT NULL,
    key         TEXT NOT NULL UNIQUE,
    consumer_id TEXT NOT NULL REFERENCES consumers (id) ON DELETE CASCADE,
    tags        TEXT,
    body        TEXT NOT NULL
);
CREATE INDEX keyauth_credentials_consumer_id ON keyauth_credentials (consumer_id);

CREATE TABLE basicauth_credentials (
    id          TEXT PRIMARY KEY NOT NULL,
    username    TEXT NOT NULL UNIQUE,
    consumer_id TEXT NOT NULL REFERENCES consumers (id) ON DELETE CASCADE,
    tags        TEXT,
    body        TEXT NOT NULL
);
CREATE INDEX basicauth_credentials_consumer_id ON basicauth_credentials (consumer_id);

CREATE TABLE acls (
    id          TEXT PRIMARY KEY NOT NULL,
    "group"     TEXT NOT NULL,
    cache_key   TEXT NOT NULL UNIQUE,
    consumer_id TEXT NOT NULL REFERENCES consumers (id) ON DELETE CASCADE,
    tags        TEXT,
    body        TEXT NOT NULL
);
CREATE INDEX acls_consumer_id ON acls (consumer_id);
