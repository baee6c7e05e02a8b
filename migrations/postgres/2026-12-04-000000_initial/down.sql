DROP TABLE bindings;
DROP TABLE dns_records;
DROP TABLE challenges;
DROP TABLE certificates;
DROP TABLE operations;
DROP TABLE instance_domains;
DROP TABLE service_instances;
DROP TABLE acme_accounts;
