-- One running operation per instance, whichever replica started it.
CREATE UNIQUE INDEX operations_one_running ON operations(instance_id) WHERE state = 'in progress';

-- The replica that drives the instance's pipeline, until its lease expires.
ALTER TABLE service_instances ADD COLUMN lease_owner TEXT;
ALTER TABLE service_instances ADD COLUMN lease_expires_at TIMESTAMP;

-- Every run of a step: which replica, from when to when.
CREATE TABLE operation_steps (
    id TEXT PRIMARY KEY,
    operation_id TEXT NOT NULL REFERENCES operations(id),
    step TEXT NOT NULL,
    replica TEXT NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP
);
CREATE INDEX operation_steps_operation ON operation_steps(operation_id);
