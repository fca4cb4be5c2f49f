"""A server's category: one of TOUCAN's 26 primary categories plus up to two secondary ones.

With an LLM configured the model chooses (JSON-schema-constrained); without one, a keyword
classifier over the server's and its tools' names and descriptions does, and says so (`method:
keywords`), so nobody mistakes it for a model's judgement.
"""

from __future__ import annotations

import json
import re
from typing import Any

from simgate.runner.onboard.observations import Category

# TOUCAN's predefined categories, each with the words that point to it (lower case, whole words or stems).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "Web Search & Research": ("search", "research", "arxiv", "scholar", "wikipedia", "query the web", "google"),
    "Browser Automation": ("browser", "playwright", "puppeteer", "selenium", "scrape", "navigate", "click",
                           "screenshot", "webpage", "html"),
    "Memory Management": ("memory", "knowledge graph", "knowledge base", "entities", "observations", "remember",
                          "note", "notes", "recall"),
    "Operating System": ("shell", "command", "process", "terminal", "system", "exec", "bash", "environment"),
    "Data Analysis & Processing": ("analy", "statistic", "dataframe", "csv", "chart", "plot", "transform",
                                   "aggregate", "json", "parse", "convert", "calculat", "math", "expression"),
    "Cryptocurrency & Blockchain": ("crypto", "blockchain", "wallet", "token price", "bitcoin", "ethereum", "defi"),
    "Daily Productivity": ("todo", "task", "reminder", "productivity", "checklist", "organize"),
    "File Management": ("file", "directory", "folder", "path", "read_file", "write_file", "document", "excel",
                        "pdf", "spreadsheet"),
    "Database Operations": ("sql", "database", "table", "query", "sqlite", "postgres", "mysql", "schema", "rows"),
    "API Integration": ("api", "webhook", "endpoint", "http request", "rest", "integration"),
    "Communication Tools": ("email", "mail", "slack", "message", "chat", "notification", "sms"),
    "Development Tools": ("git", "code", "lint", "debug", "repository", "commit", "build", "compile", "test",
                          "npm", "package", "sequential thinking", "thought", "reasoning"),
    "Security & Authentication": ("password", "encrypt", "decrypt", "hash", "auth", "secret", "security", "vault"),
    "Cloud Services": ("aws", "azure", "gcp", "cloud", "s3", "lambda", "kubernetes", "docker"),
    "AI/ML Tools": ("model", "llm", "embedding", "machine learning", "inference", "prompt", "ai "),
    "Content Creation": ("write", "edit", "generate", "image", "diagram", "mermaid", "svg", "markdown", "publish"),
    "Social Media": ("twitter", "tweet", "reddit", "facebook", "instagram", "social", "post"),
    "Financial Services": ("finance", "stock", "payment", "invoice", "bank", "currency", "exchange rate",
                           "accounting"),
    "E-commerce": ("shop", "product", "order", "cart", "ecommerce", "store"),
    "Gaming": ("game", "chess", "puzzle", "player", "play"),
    "Education": ("learn", "course", "quiz", "education", "student", "tutor"),
    "Health & Fitness": ("health", "fitness", "medical", "workout", "nutrition", "drug"),
    "Travel & Maps": ("map", "location", "geocode", "route", "travel", "flight", "hotel", "distance",
                      "coordinates"),
    "News & Media": ("news", "article", "headline", "rss", "media", "podcast"),
    "Weather": ("weather", "forecast", "temperature", "climate", "rain"),
    "Time & Calendar": ("time", "timezone", "calendar", "date", "schedule", "clock", "event"),
}
PRIMARY_NAMES = tuple(CATEGORIES)


def _text_of(name: str, description: str | None, tools: list[dict[str, Any]]) -> str:
    parts = [name.replace("-", " ").replace("_", " "), description or ""]
    for tool in tools:
        parts += [str(tool.get("name", "")).replace("_", " "), str(tool.get("description") or "")]
    return " ".join(parts).lower()


def keyword_category(name: str, description: str | None, tools: list[dict[str, Any]]) -> Category:
    """Scores each category by its words found in the names and descriptions (the server's name and
    description count double); the best is primary, the next two with a score are secondary."""
    text = _text_of(name, description, tools)
    head = f"{name} {description or ''}".lower().replace("-", " ")
    scores: dict[str, float] = {}
    for category, words in CATEGORIES.items():
        score = 0.0
        for word in words:
            pattern = re.compile(rf"(?<![a-z]){re.escape(word)}")
            score += len(pattern.findall(text)) + 2 * len(pattern.findall(head))
        if score:
            scores[category] = score
    ranked = sorted(scores, key=lambda c: (-scores[c], PRIMARY_NAMES.index(c)))
    if not ranked:
        return Category(primary="API Integration", secondary=[], method="keywords (no keyword matched)")
    return Category(primary=ranked[0], secondary=ranked[1:3], method="keywords")


CATEGORY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "analysis": {"type": "string", "maxLength": 600},
        "primary_label": {"type": "string", "enum": list(PRIMARY_NAMES)},
        "secondary_labels": {"type": "array", "items": {"type": "string", "enum": list(PRIMARY_NAMES)},
                             "maxItems": 2},
    },
    "required": ["analysis", "primary_label", "secondary_labels"],
    "additionalProperties": False,
}


def category_prompt(name: str, description: str | None, tools: list[dict[str, Any]]) -> str:
    listing = "\n".join(f"- {tool.get('name')}: {(tool.get('description') or '').strip()[:300]}" for tool in tools)
    categories = "\n".join(f"- {category}" for category in PRIMARY_NAMES)
    return (f"Label an MCP server with the category that best describes what it is for.\n\n"
            f"Categories:\n{categories}\n\nServer: {name}: {description or '(no description)'}\n"
            f"Tools:\n{listing}\n\nFirst analyse briefly what the server does, then give one primary label and "
            f"zero to two secondary labels, all from the list. Answer in JSON.")


def parse_category(text: str, model: str) -> Category | None:
    """The model's answer as a Category; None when it is not one (the caller falls back to keywords)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("primary_label") not in CATEGORIES:
        return None
    secondary = [label for label in data.get("secondary_labels") or []
                 if label in CATEGORIES and label != data["primary_label"]][:2]
    return Category(primary=data["primary_label"], secondary=secondary, method=f"llm {model}")
