"""Exchange Online as the source of truth: its exports read (`exports`, `dsc`), turned into a
tenant file and compared with the configuration (`tenantfile`), and the attribution checks
across tenants (`attribution`)."""
