-- Sluice control-plane store (SQLite).
-- Each entity is stored whole as JSON in `body` (the validated, defaults-filled entity); the
-- other columns exist only to index, constrain and reference. Foreign keys follow Kong:
-- a route keeps its service alive (RESTRICT), plugins go with what they are scoped to.

CREATE TABLE config_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO config_version (id, version) VALUES (1, 0);

CREATE TABLE services (
    id   TEXT PRIMARY KEY NOT NULL,
    name TEXT UNIQUE,
    tags TEXT,
    body TEXT NOT NULL
);

CREATE TABLE routes (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT UNIQUE,
    service_id TEXT REFERENCES services (id),
    tags       TEXT,
    body       TEXT NOT NULL
);
CREATE INDEX routes_service_id ON routes (service_id);

CREATE TABLE consumers (
    id        TEXT PRIMARY KEY NOT NULL,
    username  TEXT UNIQUE,
    custom_id TEXT UNIQUE,
    tags      TEXT,
    body      TEXT NOT NULL
);

CREATE TABLE plugins (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    instance_name TEXT UNIQUE,
    cache_key     TEXT NOT NULL UNIQUE,
    service_id    TEXT REFERENCES services (id) ON DELETE CASCADE,
    route_id      TEXT REFERENCES routes (id) ON DELETE CASCADE,
    consumer_id   TEXT REFERENCES consumers (id) ON DELETE CASCADE,
    tags          TEXT,
    body          TEXT NOT NULL
);
CREATE INDEX plugins_service_id ON plugins (service_id);
CREATE INDEX plugins_route_id ON plugins (route_id);
CREATE INDEX plugins_consumer_id ON plugins (consumer_id);
