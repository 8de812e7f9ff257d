"""The composition: the operator CLI (`flourish.cli`) and the local launcher (`flourish.local`).

The kernel (`shared`) imports no service and the services import neither each other nor this
package; this is the one place allowed to import every service (pyproject's import-linter
contracts keep it so).
"""
