"""The admin routes: forget targets at run time."""
