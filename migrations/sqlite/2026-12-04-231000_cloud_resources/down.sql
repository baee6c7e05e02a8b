DROP TABLE cloud_resources;
