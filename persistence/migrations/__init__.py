"""SQL migrations, applied in file-name order by `clarion.persistence.migrate`."""
