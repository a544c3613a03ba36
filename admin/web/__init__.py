"""In progress."""

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    del app
