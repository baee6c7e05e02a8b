DROP TABLE operation_steps;
ALTER TABLE service_instances DROP COLUMN lease_expires_at;
ALTER TABLE service_instances DROP COLUMN lease_owner;
DROP INDEX operations_one_running;
