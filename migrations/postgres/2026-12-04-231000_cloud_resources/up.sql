-- Every cloud object the broker makes for an instance, recorded before it
-- is made (so a crash in between leaves a row to look for, not an orphan)
-- and deleted once the object is gone: clean-up removes exactly these.
CREATE TABLE cloud_resources (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL REFERENCES service_instances(id),
    -- iam_server_certificate | acm_certificate | listener_certificate
    -- | cloudfront_distribution | route53_alias
    kind TEXT NOT NULL,
    -- what the broker names it by: a certificate name, a listener ARN, a
    -- record name, a distribution's caller reference
    name TEXT NOT NULL,
    -- the certificate it carries, if any
    certificate_id TEXT,
    -- what AWS calls it once made (an ARN, a distribution id); NULL before
    arn TEXT,
    -- kind-specific facts (JSON): alias targets, a distribution's domain
    details TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX cloud_resources_instance ON cloud_resources(instance_id);
