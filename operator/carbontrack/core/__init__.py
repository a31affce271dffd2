"""Pure logic, one subpackage per concern; no I/O and no clock (lint-imports' "core and api do no I/O")."""
