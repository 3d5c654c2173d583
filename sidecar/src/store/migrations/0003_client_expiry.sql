-- Clients expire: a cached metadata document when its cache lifetime ends, a dynamic
-- registration when it was never used to obtain a token within
-- [clients] unused_registration_ttl_s. The periodic sweep deletes them by this index.
CREATE INDEX IF NOT EXISTS clients_expires_idx ON clients (expires_at)
    WHERE expires_at IS NOT NULL;
