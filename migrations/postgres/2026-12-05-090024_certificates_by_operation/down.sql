DROP INDEX certificates_operation;
