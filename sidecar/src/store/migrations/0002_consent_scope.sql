-- Consent is remembered per person, client and resource, for a set of scopes: another
-- resource or a scope outside the set asks again. Rows from before (no resource, no
-- scopes) never match, so those people are asked once more.
ALTER TABLE consents ADD COLUMN IF NOT EXISTS resource TEXT NOT NULL DEFAULT '';
ALTER TABLE consents ADD COLUMN IF NOT EXISTS scopes TEXT[] NOT NULL DEFAULT '{}';
ALTER TABLE consents DROP CONSTRAINT IF EXISTS consents_pkey;
ALTER TABLE consents ADD PRIMARY KEY (user_sub, client_id, resource);
