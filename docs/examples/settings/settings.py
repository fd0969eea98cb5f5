from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # The app's own settings: their own variable names, their own .env, one folder up.
    model_config = SettingsConfigDict(env_file="../.env", extra="ignore")

    SQLALCHEMY_DATABASE_URI: str = "sqlite:///dev.db"


settings = Settings()
