"""Render the native C++ project of a port from templates/cpp and the skills' graph functions."""
